"""Alias moves in the MLflow model registry, with an audit trail.

`production` is what batch scoring and serving load; `previous` is the version it replaced, so a
rollback is one alias move; `challenger` is a gated candidate scored in shadow beside production
(promotion.mode shadow) until it is promoted or archived. Every move, and every human answer to a
promotion's approval task, is recorded on the registered model as a tag `audit.<UTC time>`
holding who did what, from which version to which, and why; `history` reads them back in order.
Stages are deprecated in MLflow and never used.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from tabular_mlops import signing, tracking

PRODUCTION = "production"
PREVIOUS = "previous"
CHALLENGER = "challenger"
# Audit actions that move the production alias (the others: challenge and archive move
# `challenger`; approve, reject and timeout record an answer and move nothing).
PRODUCTION_ACTIONS = ("promote", "rollback")
DECISIONS = ("approve", "reject", "timeout")
COMMENT_LIMIT = 2000  # an approver's comment, as recorded (the tag holds the whole entry)
AUDIT_PREFIX = "audit."
_TAG_LIMIT = 4900  # MLflow caps registered-model tag values at 5,000 characters
# Tests set this to crash a promote at a named step ("moved": aliases set, nothing recorded yet;
# "recorded": audit entry written, promoted_at not yet); None in production.
FAULT_HOOK: Callable[[str], None] | None = None


class RegistryError(RuntimeError):
    """An alias move that cannot be made, with the model and version in the message."""


@dataclass
class AliasMove:
    """One recorded move of an alias, or one answer to a promotion's approval (nothing moved)."""

    model: str
    action: str  # promote | rollback | challenge | archive | approve | reject | timeout
    from_version: str | None
    to_version: str | None
    actor: str
    at: str
    reason: str = ""
    gate: dict[str, Any] = field(default_factory=dict)
    alias: str = PRODUCTION  # the alias that moved ("" for an answer)
    # Who answered the approval task, when, what, and their comment (empty without approval).
    approval: dict[str, Any] = field(default_factory=dict)
    # True when the alias already pointed there and nothing moved now (a retry, a repeated command).
    already: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def actor(origin: dict[str, str] | None = None) -> str:
    """Who is moving the alias: the Airflow DAG run, else the shell user on this host."""
    if origin and origin.get("dag_id"):
        return f"airflow:{origin['dag_id']}/{origin.get('run_id', '?')}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    return f"cli:{user}@{socket.gethostname()}"


def alias_version(name: str, alias: str) -> str | None:
    """Version number the alias points at, or None when it is not set."""
    from mlflow.exceptions import MlflowException

    client = tracking.configure()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def challenger_version(name: str) -> str | None:
    """The version challenging in shadow, or None: the alias unset, or parked on production.

    Clearing the challenger parks the alias on the production version instead of deleting it:
    MLflow's auth lets only MANAGE delete an alias, and the workers hold EDIT (no deletes).
    """
    version = alias_version(name, CHALLENGER)
    if version is None or version == alias_version(name, PRODUCTION):
        return None
    return version


def _keep_parked(client: Any, name: str, production: str | None, target: str) -> None:
    """A challenger parked on `production` follows production to `target` before it moves
    (left behind, it would challenge again); a crash in between leaves `target` challenging."""
    if production is not None and alias_version(name, CHALLENGER) == production:
        client.set_registered_model_alias(name, CHALLENGER, target)


def registered_by(name: str, experiment: str, origin: dict[str, str]) -> tuple[str, str] | None:
    """(MLflow run id, version) that an earlier try of this Airflow run already registered.

    A worker lost after registering (killed, evicted) leaves its version behind; the retry must
    return it instead of registering a second version of the same candidate.
    """
    client = tracking.configure()
    found = client.get_experiment_by_name(experiment)
    if found is None or not origin.get("run_id"):
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=(
            f"tags.airflow_dag_id = '{origin.get('dag_id', '')}' "
            f"AND tags.airflow_run_id = '{origin['run_id']}'"
        ),
    )
    for run in runs:
        versions = client.search_model_versions(f"name = '{name}' AND run_id = '{run.info.run_id}'")
        if versions:
            return run.info.run_id, str(max(int(v.version) for v in versions))
    return None


def _record(client: Any, move: AliasMove) -> None:
    payload = move.to_dict()
    payload.pop("already")
    text = json.dumps(payload, default=str)
    if len(text) > _TAG_LIMIT:
        payload["gate"] = {"passed": move.gate.get("passed"), "reasons": move.gate.get("reasons", [])[:5]}
        text = json.dumps(payload, default=str)[:_TAG_LIMIT]
    client.set_registered_model_tag(move.model, f"{AUDIT_PREFIX}{move.at}", text)


def _check_made_here(name: str, version: str, action: str) -> None:
    """RegistryError unless the version's artifacts verify against this bundle's signature."""
    try:
        signing.verify_version(name, version)
    except signing.SignatureError as exc:
        raise RegistryError(f"refusing to {action}: {exc}") from None


def _fault_point(step: str) -> None:
    """Give a test the chance to crash a promote here (see FAULT_HOOK)."""
    if FAULT_HOOK is not None:
        FAULT_HOOK(step)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def promote(
    name: str,
    version: str,
    who: str,
    reason: str = "",
    gate: dict[str, Any] | None = None,
    approval: dict[str, Any] | None = None,
) -> AliasMove:
    """Point production at `version`, keep the replaced one under previous, and record the move.

    Idempotent: when production already points at `version` (a retry whose lost try moved the
    alias, or the same command twice) nothing moves and the move that put it there is returned
    with `already` set; it is recorded now only if the lost try died before recording it.
    """
    client = tracking.configure()
    found = client.get_model_version(name, str(version))  # raises when the version does not exist
    _check_made_here(name, str(version), "promote")
    current = alias_version(name, PRODUCTION)
    if current == str(version):
        before = alias_version(name, PREVIOUS)  # what a lost try replaced, if it moved the alias
        attempted = AliasMove(
            name, "promote", before, str(version), who, _now(), reason, gate or {}, approval=approval or {}
        )
        move = _completed_promotion(client, name, str(version), attempted)
    else:
        _keep_parked(client, name, current, str(version))
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, current)
        client.set_registered_model_alias(name, PRODUCTION, str(version))
        _fault_point("moved")
        move = AliasMove(
            name, "promote", current, str(version), who, _now(), reason, gate or {}, approval=approval or {}
        )
        _record(client, move)
        _fault_point("recorded")
    if "promoted_at" not in found.tags:
        client.set_model_version_tag(name, str(version), "promoted_at", move.at)
    return move  # a challenger at `version` is now parked on production: it no longer challenges


def _completed_promotion(client: Any, name: str, version: str, attempted: AliasMove) -> AliasMove:
    """The recorded move that left `version` in production, flagged `already`; recorded if missing.

    Production at `version` with the last audit entry pointing elsewhere means a try moved the
    aliases and was lost before recording: `attempted` (from the `previous` that try set) is
    recorded once, so the trail holds exactly one entry for the promotion.
    """
    moves = [m for m in history(name) if m["action"] in PRODUCTION_ACTIONS]
    if moves and moves[-1]["to_version"] == version:
        return _as_move(moves[-1], already=True)
    if attempted.from_version == version:  # previous never names the version it replaced
        attempted.from_version = None
    _record(client, attempted)
    attempted.already = True
    return attempted


def _as_move(entry: dict[str, Any], already: bool = False) -> AliasMove:
    known = {f.name for f in fields(AliasMove)} - {"already"}
    return AliasMove(**{k: v for k, v in entry.items() if k in known}, already=already)


def rollback(name: str, who: str, reason: str = "") -> AliasMove:
    """Move production back to the previous version (previous then holds the rolled-back one)."""
    client = tracking.configure()
    current = alias_version(name, PRODUCTION)
    before = alias_version(name, PREVIOUS)
    if before is None or current is None:
        raise RegistryError(f"{name}: nothing to roll back to (production={current}, previous={before})")
    _check_made_here(name, before, "roll back")  # anyone with EDIT can point `previous` anywhere
    _keep_parked(client, name, current, before)
    client.set_registered_model_alias(name, PRODUCTION, before)
    client.set_registered_model_alias(name, PREVIOUS, current)
    move = AliasMove(name, "rollback", current, before, who, _now(), reason or "rollback")
    _record(client, move)
    return move


def history(name: str) -> list[dict[str, Any]]:
    """Every recorded alias move of a registered model, oldest first."""
    client = tracking.configure()
    model = client.get_registered_model(name)
    moves = [json.loads(v) for k, v in model.tags.items() if k.startswith(AUDIT_PREFIX)]
    return sorted(moves, key=lambda m: m["at"])


def set_challenger(
    name: str,
    version: str,
    who: str,
    reason: str = "",
    gate: dict[str, Any] | None = None,
    approval: dict[str, Any] | None = None,
) -> AliasMove:
    """Point `challenger` at a gated version (shadow mode); production does not move. Idempotent."""
    client = tracking.configure()
    client.get_model_version(name, str(version))  # raises when the version does not exist
    _check_made_here(name, str(version), "shadow")
    if alias_version(name, PRODUCTION) == str(version):
        raise RegistryError(f"{name} version {version} is production already; it cannot challenge itself")
    current = challenger_version(name)
    if current == str(version):
        entries = [m for m in history(name) if m.get("alias") == CHALLENGER]
        if entries and entries[-1]["action"] == "challenge" and entries[-1]["to_version"] == str(version):
            return _as_move(entries[-1], already=True)
    else:
        client.set_registered_model_alias(name, CHALLENGER, str(version))
    move = AliasMove(
        name, "challenge", current, str(version), who, _now(), reason, gate or {}, CHALLENGER, approval or {}
    )
    _record(client, move)
    return move


def promote_challenger(
    name: str, who: str, reason: str = "", expected: str | None = None, approval: dict[str, Any] | None = None
) -> AliasMove:
    """Move production to the challenger (previous keeps the replaced one); challenger is cleared.

    `expected` refuses when the challenger is no longer that version (the evidence was about
    another one). A retry after the move finds the challenger gone and production at `expected`,
    and returns that promotion flagged `already`.
    """
    version = challenger_version(name)
    if version is None:
        if expected is not None and alias_version(name, PRODUCTION) == str(expected):
            return promote(name, str(expected), who, reason, approval=approval)  # the retry of a done move
        raise RegistryError(f"{name}: no version has alias {CHALLENGER!r}; nothing to promote")
    if expected is not None and version != str(expected):
        raise RegistryError(
            f"{name}: the challenger is version {version}, not {expected}; refusing to promote"
        )
    return promote(name, version, who, reason or "the challenger won in shadow", approval=approval)


def archive_challenger(name: str, who: str, reason: str = "") -> AliasMove:
    """Stop shadowing: park the `challenger` alias on production (deleted when there is none);
    the version itself stays in the registry."""
    client = tracking.configure()
    version = challenger_version(name)
    if version is None:
        raise RegistryError(f"{name}: no version has alias {CHALLENGER!r}; nothing to archive")
    production = alias_version(name, PRODUCTION)
    if production is not None:
        client.set_registered_model_alias(name, CHALLENGER, production)
    else:  # nothing to park on: deleting needs MANAGE (an admin), the workers get a 403
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "archived_at", _now())
    move = AliasMove(name, "archive", version, None, who, _now(), reason or "archived", alias=CHALLENGER)
    _record(client, move)
    return move


def record_decision(
    name: str, version: str, decision: str, who: str, approval: dict[str, Any], reason: str = ""
) -> AliasMove:
    """Record an answer to a promotion's approval task (who, when, comment); nothing moves.

    Idempotent per answer: a retried recording task finds its entry (same decision, version,
    actor and answer time) and returns it flagged `already`.
    """
    if decision not in DECISIONS:
        raise RegistryError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)}")
    client = tracking.configure()
    approval = {**approval, "comment": str(approval.get("comment") or "")[:COMMENT_LIMIT]}
    for entry in reversed(history(name)):
        same = (entry["action"], entry["to_version"], entry["actor"]) == (decision, str(version), who)
        if same and entry.get("approval", {}).get("responded_at") == approval.get("responded_at"):
            return _as_move(entry, already=True)
    current = alias_version(name, PRODUCTION)
    move = AliasMove(name, decision, current, str(version), who, _now(), reason, alias="", approval=approval)
    _record(client, move)
    return move
