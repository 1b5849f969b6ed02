"""
### `<model>_registry`: registry actions from the Airflow UI, one DAG per model config

What `mlops promote`, `mlops rollback`, `mlops promote --from challenger` and
`mlops archive-challenger` do, as a form (Trigger DAG, then the Param `action`):

- **promote_version**: `production` to Param `version`; `previous` keeps the replaced one.
- **rollback**: `production` back to `previous`.
- **promote_challenger**: `production` to the shadow `challenger`, which is then cleared.
- **archive_challenger**: stop shadowing (the `challenger` alias is parked on production); the
  version stays in the registry.

Also scheduled by the `challenger/<model>` Asset: when monitoring finds that the shadow challenger
beat production over `promotion.shadow_min_labelled` labelled rows, a run proposes it
(promote_challenger, the evidence in the approval body).

1. **plan** checks the action against the registry (the version exists, the alias is set) and
   fails the run naming the field when it cannot be done; nothing has moved then.
2. **approve** (only with `promotion.approval: required`, and only for promotions): Airflow's
   ApprovalOperator, as in `<model>_training`; Reject or timeout moves nothing.
3. **act** makes the move through the same registry code and audit trail as the CLI.
4. **record_answer** writes who answered, when, and their comment to the audit trail.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_parsing_context, task
from tabular_mlops import approval
from tabular_mlops.assets import challenger_asset, model_asset
from tabular_mlops.config import ModelConfig, load_model_configs
from tabular_mlops.dag_defaults import dag_arguments
from tabular_mlops.registry_actions import ACTIONS, NEEDS_APPROVAL, PROMOTE_VERSION


def build_registry_dag(config: ModelConfig) -> object:
    """The registry-actions DAG of one model config."""
    dag_id = f"{config.name}_registry"
    approval_required = config.promotion.approval == "required"

    @dag(
        dag_id=dag_id,
        description=f"Registry actions of {config.name}: promote, roll back, challenger",
        doc_md=__doc__,
        schedule=[challenger_asset(config.name)],
        **dag_arguments(config, "registry"),
        params={
            "action": Param(PROMOTE_VERSION, enum=list(ACTIONS), title="Action"),
            "version": Param(
                None,
                type=["null", "string"],
                pattern="^[1-9][0-9]{0,8}$",
                title="Version",
                description="promote_version: the version to promote; promote_challenger: optional, "
                "refuses when the challenger is another version.",
            ),
            "reason": Param("", type="string", maxLength=1000, title="Reason", description="Recorded."),
        },
    )
    def registry_actions() -> None:
        @task
        def plan(params: dict | None = None, triggering_asset_events: Any = None) -> dict:
            """Check the action against the registry; fail naming the field when it cannot be done."""
            from airflow.sdk.exceptions import AirflowFailException
            from tabular_mlops.registry_actions import ActionRefused
            from tabular_mlops.registry_actions import plan as plan_action

            params = params or {}
            events = list((triggering_asset_events or {}).get(challenger_asset(config.name), []))
            event = dict(events[-1].extra) if events else None
            try:
                return plan_action(
                    config, params.get("action"), params.get("version"), params["reason"], event
                )
            except ActionRefused as exc:
                raise AirflowFailException(str(exc)) from None

        @task.branch
        def approval_needed(planned: dict) -> list[str]:
            """Promotions wait for a person; a rollback or an archive goes straight on."""
            from tabular_mlops.approval import TASK_ID

            return [TASK_ID, "act"] if planned["action"] in NEEDS_APPROVAL else ["act"]

        @task(outlets=[model_asset(config.name)], trigger_rule="none_failed_min_one_success")
        def act(planned: dict, run_id: str | None = None, ti: Any = None) -> dict:
            """Make the move through the CLI's registry code and audit trail."""
            from tabular_mlops.approval import ANSWER_KEY, TASK_ID, decision_of
            from tabular_mlops.registry_actions import act as act_on

            answer = ti.xcom_pull(task_ids=TASK_ID, key=ANSWER_KEY) if approval_required and ti else None
            found = decision_of(answer)
            origin = {"dag_id": dag_id, "run_id": run_id or ""}
            return act_on(config, planned, origin, found[1] if found else None)

        planned = plan()
        if not approval_required:
            act(planned)
            return
        approval.wire(config, dag_id, approval_needed(planned), planned, act(planned))

    return registry_actions()


_current = get_parsing_context().dag_id
for _name, _config in load_model_configs().items():
    # A task run needs only its own DAG; skip building the others.
    if _current is None or _current == f"{_name}_registry":
        globals()[f"{_name}_registry"] = build_registry_dag(_config)
