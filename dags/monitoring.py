"""
### `<model>_monitoring`: one DAG per model config in `include/configs/`

Runs when batch scoring publishes a partition (the `predictions/<model>` Asset), and daily from
the config's `schedules.monitoring` cron as a fallback. A cron run follows the scoring calendar:
the 06:00 run on D+1 has data interval from D 00:00 and judges `dt=D`:

1. **measure**: one Evidently report of the newest predictions partition (a cron run: its
   day's; Param `current` overrides) against the reference logged with the version that scored
   it. Its metrics compute every figure the run acts on, on every row: PSI of every feature
   weighted by the feature's importance in that version, PSI of the predicted probabilities,
   ROC AUC and accuracy estimated from the probabilities (CBPE, with the calibrator logged with
   the version) and, when labels have arrived (Param `labels`, default
   `<lake>/labels/<model>/`), realised quality per model version. A window smaller than
   `monitoring.min_rows` is measured but not judged for drift. Saves the HTML report, its
   snapshot and a JSON summary under `reports/monitoring/<model>/dt=<date>/`, files the snapshot
   in the model's Evidently project (the dashboard of `make monitoring-ui`), logs them to
   MLflow and records the window's verdict on the registered model. The date is the `day` the
   partition's `_manifest.json` names, never its path.
2. **alert**: on a breach that has lasted `monitoring.consecutive_windows` windows, is not in
   the cool-down (unless it got worse) and fits the day's `alert_budget_per_day`, one email
   per window with the report and a trend of the last 30 windows attached, through the SMTP
   connection of the config, with a Message-ID fixed by model and window. "sending" is
   recorded before the send and "sent" after: a retry after a crash in between sends the same
   message again (receivers that deduplicate by Message-ID show it once), a retry after "sent"
   sends nothing; a mail server that stays down fails the task visibly.

A registry, object store or mail server that is down for a moment raises its own error and the
task retries with exponential back-off; only the data or the model (a MonitoringError) fail the
window at once, without retries.
3. **request_retrain**: after an alert, updates the `retrain/<model>` Asset that schedules
   `<model>_training`; its candidate still has to pass the quality gate. Skipped otherwise.
4. **propose_challenger**: when the window's shadow challenger beat the champion on at least
   `promotion.shadow_min_labelled` labelled rows (the summary's `challenger` section: the gate's
   paired bootstrap over this window and the 29 days before it), updates the `challenger/<model>`
   Asset with extra `{"version", "evidence"}`, which `<model>_registry` consumes; once per
   window (recorded on the window's tag). Skipped otherwise, saying why.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_parsing_context, task
from tabular_mlops.assets import challenger_asset, predictions_asset, retrain_asset
from tabular_mlops.config import ModelConfig, load_model_configs
from tabular_mlops.dag_defaults import dag_arguments


def _schedule(config: ModelConfig) -> Any:
    """Every published predictions partition; the cron of the config adds a daily fallback."""
    if config.schedules.monitoring is None:
        return [predictions_asset(config.name)]
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable
    from tabular_mlops.config import day_interval

    # As for scoring: the 06:00 run on D+1 has logical date D 00:00 and judges dt=D.
    cron = config.schedules.monitoring
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(cron, timezone="UTC", interval=day_interval(cron)),
        assets=[predictions_asset(config.name)],
    )


def build_monitoring_dag(config: ModelConfig) -> object:
    """The monitoring DAG of one model config."""
    dag_id = f"{config.name}_monitoring"

    @dag(
        dag_id=dag_id,
        description=f"Drift and quality monitoring of {config.name}",
        doc_md=__doc__,
        schedule=_schedule(config),
        **dag_arguments(config, "monitoring"),
        params={
            "current": Param(
                None,
                type=["null", "string"],
                title="Predictions partition",
                description="Folder or s3:// prefix of a predictions partition; empty: the newest one.",
            ),
            "reference": Param(
                None,
                type=["null", "string"],
                title="Reference rows",
                description="Model input rows to compare with; empty: the reference logged with the version.",
            ),
            "labels": Param(
                None,
                type=["null", "string"],
                title="Labels",
                description="Labels file or folder keyed by the entity id; empty: <lake>/labels/<model>/.",
            ),
        },
    )
    def monitoring() -> None:
        @task
        def measure(params: dict | None = None) -> dict:
            """Drift and quality of the window; report saved and logged; verdict recorded."""
            import logging

            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowFailException
            from tabular_mlops import settings, storage
            from tabular_mlops.config import get_model_config
            from tabular_mlops.monitoring import MonitoringError
            from tabular_mlops.monitoring import measure as run
            from tabular_mlops.scoring import lake_root, partition, run_day

            cfg = get_model_config(config.name)
            params = params or {}
            current = params.get("current")
            run_info = get_current_context()["dag_run"]
            if current is None and run_info.run_type in ("scheduled", "backfill"):
                # A cron run judges its data interval's day, the one that night's scoring scored.
                day = run_day(None, run_info.logical_date, run_info.run_after)
                current = partition(cfg, "predictions", day)
            labels = params.get("labels")
            if labels is None:
                default = storage.join(settings.resolve_location(lake_root(cfg)), "labels", cfg.name)
                labels = default if storage.list_files(default, cfg.data.aws_conn_id) else None
            try:
                return run(
                    cfg,
                    current,
                    params.get("reference"),
                    labels,
                    progress=logging.getLogger("tabular_mlops.monitoring").info,
                )
            except MonitoringError as exc:
                # Only the data or the model: monitoring never wraps a transient fault in one, so a
                # registry or store that is down propagates and the task's retries apply.
                raise AirflowFailException(str(exc)) from exc

        @task
        def alert(summary: dict) -> dict:
            """Email the breach when it is due; at most once per window."""
            from tabular_mlops.config import get_model_config
            from tabular_mlops.monitoring import send_alert

            if not summary["breach"]:
                return {"sent": False, "why": "no breach"}
            sent, why = send_alert(get_model_config(config.name), summary)
            return {"sent": sent, "why": why}

        @task(outlets=[retrain_asset(config.name)])
        def request_retrain(alerted: dict, summary: dict) -> str:
            """Ask for a retrain after an alert (the Asset event schedules the training DAG)."""
            from airflow.sdk.exceptions import AirflowSkipException

            if not alerted["sent"]:
                raise AirflowSkipException(f"no retrain requested: {alerted['why']}")
            return summary["headline"]

        @task(outlets=[challenger_asset(config.name)])
        def propose_challenger(summary: dict, run_id: str | None = None) -> str:
            """Propose the shadow challenger for production when it won; the event carries the evidence."""
            import logging

            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowSkipException
            from tabular_mlops.config import get_model_config
            from tabular_mlops.monitoring import challenger_proposal

            extra, why = challenger_proposal(get_model_config(config.name), summary, run_id or "manual")
            if extra is None:
                raise AirflowSkipException(f"no challenger proposed: {why}")
            logging.getLogger("tabular_mlops.monitoring").info("proposing the challenger: %s", why)
            get_current_context()["outlet_events"][challenger_asset(config.name)].extra = extra
            return why

        summary = measure()
        request_retrain(alert(summary), summary)
        propose_challenger(summary)

    return monitoring()


_current = get_parsing_context().dag_id
for _name, _config in load_model_configs().items():
    # A task run needs only its own DAG; skip building the others.
    if _current is None or _current == f"{_name}_monitoring":
        globals()[f"{_name}_monitoring"] = build_monitoring_dag(_config)
