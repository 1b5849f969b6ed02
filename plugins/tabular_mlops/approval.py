"""The human approval step between gate and promote (config `promotion.approval: required`).

It is Airflow's own human-in-the-loop `ApprovalOperator` (standard provider): the task parks in
`awaiting_input` without a worker slot, shows its Markdown body in the UI's Required Actions, and
resumes when someone answers in the UI, over the REST API (`mlops approve` / `mlops reject`), or
when `promotion.approval_timeout_hours` pass, which counts as Reject (the operator's `defaults`).
`promotion.approvers` becomes the task's assigned users, so Airflow itself refuses anyone else.
A notifier mails the approvers a link to the task. Every answer is recorded in the registry's
audit trail by `record_answer`, which runs whatever the answer was.
"""

from __future__ import annotations

import html
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.bases.notifier import BaseNotifier

from tabular_mlops import registry, tracking
from tabular_mlops.config import ModelConfig

log = logging.getLogger(__name__)
TASK_ID = "approve"
APPROVE, REJECT = "Approve", "Reject"
COMMENT = "comment"
ANSWER_KEY = "answer"  # the XCom key PromotionApproval keeps the answer under
MLFLOW_UI_ENV = "MLOPS_MLFLOW_UI_URL"  # where people open MLflow, when it is not the tracking URI


def mlflow_run_link(run_id: str) -> str | None:
    """URL of a run in the MLflow UI (MLOPS_MLFLOW_UI_URL, else an http(s) tracking URI); None without."""
    base = os.environ.get(MLFLOW_UI_ENV) or tracking.tracking_uri()
    if not base.startswith(("http://", "https://")):
        return None
    client = tracking.configure()
    experiment = client.get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def _fingerprint_lines(run_id: str) -> list[str]:
    """The data the candidate was trained on, as its MLflow run recorded it."""
    tags = tracking.configure().get_run(run_id).data.tags
    keys = ("input_fingerprint", "interim_dir", "config_hash", "git_commit")
    rows = [f"- {key}: `{tags[key]}`" for key in keys if tags.get(key)]
    return rows or ["- (the run recorded no fingerprint)"]


def request_body(config: ModelConfig, run_id: str, card: str) -> str:
    """What an approver reads: the model card, the data fingerprint and links to the run and plots."""
    link = mlflow_run_link(run_id)
    plots = f"{link}/artifacts/evaluation" if link else f"artifacts `evaluation/` of MLflow run `{run_id}`"
    where = f"[MLflow run {run_id}]({link})" if link else f"MLflow run `{run_id}`"
    lines = [
        card.strip(),
        "",
        "## Data fingerprint",
        *_fingerprint_lines(run_id),
        "",
        "## Links",
        f"- {where}",
        f"- plots (ROC, PR, calibration, confusion, importance): {plots}",
        "",
        f"**Approve** moves `{_target(config)}` to this version; **Reject** moves nothing. No answer "
        f"within {config.promotion.approval_timeout_hours:g} h counts as Reject. Your comment goes "
        "into the registry's audit trail with your name.",
    ]
    return "\n".join(lines) + "\n"


def _target(config: ModelConfig) -> str:
    return registry.CHALLENGER if config.promotion.mode == "shadow" else registry.PRODUCTION


def decision_of(answer: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """(approve | reject | timeout, the audit record) from the approval task's result; None: no answer."""
    if not answer or not answer.get("chosen_options"):
        return None
    chosen = answer["chosen_options"][0]
    user = answer.get("responded_by_user") or {}
    at = answer.get("responded_at")
    # The scheduler applied the default (Reject) when the time ran out: nobody answered.
    timed_out = bool(answer.get("timedout")) or not user
    decision = "timeout" if timed_out else ("approve" if chosen == APPROVE else "reject")
    comment = (answer.get("params_input") or {}).get(COMMENT) or ""
    record = {
        "decision": decision,
        "by": user.get("name") or "nobody (timed out)",
        "user_id": user.get("id"),
        "responded_at": str(at) if at else None,
        "comment": str(comment),
    }
    return decision, record


def record_answer(
    config: ModelConfig, candidate: dict[str, Any], answer: dict[str, Any] | None, origin: dict[str, str]
) -> dict[str, Any]:
    """Write the answer (who, when, comment) to the registry's audit trail; nothing moves here."""
    found = decision_of(answer)
    if found is None or candidate.get("version") is None:
        return {"recorded": False, "reason": "no answer (the approval task did not finish)"}
    decision, record = found
    name = tracking.registered_name(config.model.registered_name)
    reason = f"{decision} of version {candidate['version']} (MLflow run {candidate.get('run_id')})"
    move = registry.record_decision(
        name, str(candidate["version"]), decision, registry.actor(origin), record, reason
    )
    return {"recorded": True, "decision": decision, "by": record["by"], "already": move.already}


def assigned_users(config: ModelConfig) -> list[dict[str, str]] | None:
    """The approvers as Airflow HITL users; None lets anyone with the HITL permission answer."""
    users = [{"id": a.id, "name": a.name} for a in config.promotion.approvers]
    return users or None


class PromotionApproval(ApprovalOperator):
    """Airflow's ApprovalOperator that also keeps the answer in XCom `answer`, whatever it was.

    On Reject the operator skips what follows it and pushes no return value, so the answer is
    pushed first: `record_answer` and `promote` read it from there.
    """

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Keep the answer (who, when, what, comment, timed out or not), then let Airflow act on it."""
        if "error" not in event:
            answer = {k: event.get(k) for k in ("chosen_options", "params_input", "responded_by_user")}
            at: Any = event.get("responded_at")
            answer["responded_at"] = at.isoformat() if hasattr(at, "isoformat") else at
            answer["timedout"] = bool(event.get("timedout"))
            context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
        return super().execute_complete(context=context, event=event)


def build_operator(config: ModelConfig, body_from: str) -> Any:
    """The approval task: Airflow's ApprovalOperator, its body rendered from task `body_from`'s XCom."""
    from airflow.sdk import Param

    return PromotionApproval(
        task_id=TASK_ID,
        subject=f"Approve {config.name} version {{{{ ti.xcom_pull(task_ids='{body_from}')['version'] }}}}?",
        body=f"{{{{ ti.xcom_pull(task_ids='{body_from}')['approval_body'] }}}}",
        defaults=REJECT,
        response_timeout=timedelta(hours=config.promotion.approval_timeout_hours),
        assigned_users=assigned_users(config),
        notifiers=[ApprovalRequestNotifier(config.name)],
        params={COMMENT: Param("", type="string", title="Comment", description="Recorded with your answer.")},
    )


class ApprovalRequestNotifier(BaseNotifier):
    """Mails the approvers (or the alert recipients) a link to the waiting approval task."""

    template_fields = ()

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    def notify(self, context: Any) -> None:
        """Send the mail; a mail that cannot go out is logged and never blocks the approval."""
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        from tabular_mlops.config import get_model_config

        config = get_model_config(self.model)
        recipients = [a.email for a in config.promotion.approvers if a.email] or list(
            config.alerts.recipients
        )
        link = _task_link(context)
        task = context["task"]
        body = (
            f"<p>{html.escape(str(task.subject))}</p><p>Answer in Airflow: "
            f'<a href="{html.escape(link)}">{html.escape(link)}</a></p>'
            f"<p>or: <code>mlops approve --model {self.model} --run {html.escape(context['run_id'])}"
            " --comment '...'</code></p>"
            f"<pre>{html.escape(str(task.body or ''))}</pre>"
        )
        try:
            with SmtpHook(smtp_conn_id=config.alerts.smtp_conn_id) as hook:
                hook.send_email_smtp(
                    to=recipients,
                    from_email=config.alerts.sender,
                    subject=str(task.subject),
                    html_content=body,
                )
        except Exception as exc:  # noqa: BLE001 - the request stays visible in Required Actions
            log.error("approval request mail for %s not sent: %s", self.model, exc)


def _task_link(context: Any) -> str:
    """The task's Required Actions page (Airflow's own link builder; api.base_url must be set)."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    try:
        return HITLOperator.generate_link_to_ui_from_context(context=context)
    except ValueError:  # no [api] base_url configured: name the run instead of a link
        ti = context["task_instance"]
        return f"/dags/{ti.dag_id}/runs/{ti.run_id}/tasks/{ti.task_id}/required_actions"


def answer_in_metadata_db(
    dag_id: str,
    option: str,
    comment: str,
    user: dict[str, str],
    timeout: float = 600,
    since: datetime | None = None,
) -> str:
    """Answer the waiting approval task of `dag_id` by writing the metadata DB directly; return its run id.

    For `dag.test()` runs, which have no api-server (the demo, tests): the same steps as Airflow's
    PATCH .../hitlDetails route (record who, when and what, then resume the parked task). Anything
    with an api-server answers through it instead (`mlops approve`, the UI).
    """
    import time

    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.sdk import timezone
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with create_session() as session:
            query = select(TaskInstance).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.task_id == TASK_ID,
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
            )
            if since is not None:  # a question asked before `since` belongs to another run
                query = query.where(TaskInstance.start_date >= since)
            ti = session.scalars(query).first()
            detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id)) if ti else None
            if ti is not None and detail is not None:
                detail.responded_by = {"id": user["id"], "name": user["name"]}
                detail.responded_at = timezone.utcnow()
                detail.chosen_options = [option]
                detail.params_input = {COMMENT: comment}
                session.add(detail)
                handle_event_submit(
                    TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                )
                return str(ti.run_id)
        time.sleep(0.5)
    raise TimeoutError(f"no approval task of {dag_id} waited for an answer within {timeout:.0f}s")


def wire(
    config: ModelConfig, dag_id: str, branch: Any, subject: Any, acted: Any, **record_kwargs: Any
) -> None:
    """Put the approval between `branch` and `acted`, and record its answer in a teardown.

    `branch` picks the approval task (or skips it), `subject` is the XCom of the checked move (its
    `approval_body` is the request's body, its `version` what is approved) and `acted` the task that
    moves the alias. The teardown runs whatever the answer was: ApprovalOperator skips what
    follows it on Reject, but never a teardown.
    """
    from airflow.sdk import task, teardown

    @teardown(on_failure_fail_dagrun=True)
    @task(task_id="record_answer", **record_kwargs)
    def record_answer_task(checked: dict, run_id: str | None = None, ti: Any = None) -> dict:
        """Write the approver's answer (who, when, comment) to the audit trail, whatever it was."""
        answer = ti.xcom_pull(task_ids=TASK_ID, key=ANSWER_KEY) if ti else None
        return record_answer(config, checked, answer, {"dag_id": dag_id, "run_id": run_id or ""})

    approve = build_operator(config, body_from=subject.operator.task_id)
    branch >> [approve, acted]
    approve >> acted
    [approve, acted] >> record_answer_task(subject)


def approve_in_background(model: str, comment: str, user: dict[str, str], timeout: float = 600) -> None:
    """Answer Approve to this run's question of `<model>_training` from a thread (dag.test() runs).

    Only a question asked from now on is answered: an interrupted earlier run may have left one
    parked. A run that ends without asking (a refused gate) leaves nothing to answer.
    """
    import threading

    from airflow.models import import_all_models

    # Import Airflow's models here, not in the thread: SQLAlchemy configures the mappers on the
    # first query while holding its lock, and a thread importing a model module at that moment
    # deadlocks with it (seen: bench-chain hung in a fresh process at the first dag.test()).
    import_all_models()
    since = datetime.now(UTC)

    def approve() -> None:
        try:
            answer_in_metadata_db(f"{model}_training", APPROVE, comment, user, timeout=timeout, since=since)
        except TimeoutError:
            pass

    threading.Thread(target=approve, daemon=True).start()
