"""What the `<model>_registry` DAG does: the CLI's registry commands, chosen in a form.

`plan` checks the form (or the `challenger/<model>` Asset event that monitoring emits when a
shadow challenger won) against the registry before anything moves, and writes what an approver
reads; `act` makes the move through the same registry functions, and audit trail, as
`mlops promote`, `mlops rollback`, `mlops promote --from challenger` and `mlops archive-challenger`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tabular_mlops import registry, tracking
from tabular_mlops.config import ModelConfig

PROMOTE_VERSION, ROLLBACK = "promote_version", "rollback"
PROMOTE_CHALLENGER, ARCHIVE_CHALLENGER = "promote_challenger", "archive_challenger"
ACTIONS = (PROMOTE_VERSION, ROLLBACK, PROMOTE_CHALLENGER, ARCHIVE_CHALLENGER)
# Moves that put a version into production for the first time ask for approval when configured;
# a rollback returns to the version production had (approved then) and archiving moves nothing in.
NEEDS_APPROVAL = (PROMOTE_VERSION, PROMOTE_CHALLENGER)
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")


class ActionRefused(ValueError):
    """A registry action that cannot be made, naming the field and why."""


def _checked_version(value: Any) -> str:
    text = str(value).strip() if value is not None else ""
    if not _VERSION.match(text):
        raise ActionRefused(f"version: {value!r} is not a registry version number (1, 2, ...)")
    return text


def plan(
    config: ModelConfig, action: str, version: Any, reason: str, event: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check an action against the registry; return what `act` does, with the approval body."""
    if event is not None:  # the challenger/<model> Asset event: monitoring's evidence
        action, version = PROMOTE_CHALLENGER, event.get("version")
        reason = reason or "the challenger won in shadow: " + json.dumps(event.get("evidence", {}))[:500]
    if action not in ACTIONS:
        raise ActionRefused(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    name = tracking.registered_name(config.model.registered_name)
    production = registry.alias_version(name, registry.PRODUCTION)
    target = _target(name, action, version)
    run_id = str(tracking.configure().get_model_version(name, target).run_id) if target else None
    planned = {
        "action": action,
        "version": target,
        "production": production,
        "reason": str(reason or action)[:1000],
        "run_id": run_id,
        "evidence": (event or {}).get("evidence"),
    }
    if action in NEEDS_APPROVAL and config.promotion.approval == "required" and target:
        planned["approval_body"] = _approval_body(config, name, planned)
    return planned


def _target(name: str, action: str, version: Any) -> str | None:
    """The version the action puts in place (None for archive), checked to exist."""
    client = tracking.configure()
    target: str | None
    if action == PROMOTE_VERSION:
        target = _checked_version(version)
    elif action == ROLLBACK:
        target = registry.alias_version(name, registry.PREVIOUS)
        if target is None:
            raise ActionRefused(
                f"{name}: no version has alias {registry.PREVIOUS!r}; nothing to roll back to"
            )
    else:
        target = registry.challenger_version(name)
        if target is None:
            raise ActionRefused(f"{name}: no version has alias {registry.CHALLENGER!r}")
        if version not in (None, "") and _checked_version(version) != target:
            raise ActionRefused(f"version: the challenger is version {target}, not {version}")
        if action == ARCHIVE_CHALLENGER:
            return target
    client.get_model_version(name, target)  # raises naming the version when it does not exist
    return target


def _approval_body(config: ModelConfig, name: str, planned: dict[str, Any]) -> str:
    from tabular_mlops.approval import request_body

    card = tracking.configure().get_model_version(name, planned["version"]).description or "(no model card)"
    lines = [
        f"**{planned['action']}**: version {planned['version']} (production now: {planned['production']})"
    ]
    if planned.get("evidence"):
        lines += ["", "## Shadow evidence", "```json", json.dumps(planned["evidence"], indent=2), "```"]
    return "\n".join(lines) + "\n\n" + request_body(config, planned["run_id"], card)


def act(
    config: ModelConfig, planned: dict[str, Any], origin: dict[str, str], approval: dict[str, Any] | None
) -> dict[str, Any]:
    """Make the planned move; refuse a promotion that needs an approval nobody gave."""
    name = tracking.registered_name(config.model.registered_name)
    action, version, reason = planned["action"], planned["version"], planned["reason"]
    needs = action in NEEDS_APPROVAL and config.promotion.approval == "required"
    if needs and (approval or {}).get("decision") != "approve":
        raise ActionRefused(f"{name}: {action} of version {version} needs an approval nobody gave")
    who = registry.actor(origin)
    if action == PROMOTE_VERSION:
        move = registry.promote(name, version, who, reason=reason, approval=approval)
    elif action == ROLLBACK:
        move = registry.rollback(name, who, reason=reason)
    elif action == PROMOTE_CHALLENGER:
        move = registry.promote_challenger(name, who, reason=reason, expected=version, approval=approval)
    else:
        move = registry.archive_challenger(name, who, reason=reason)
    return move.to_dict()
