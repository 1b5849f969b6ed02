"""
### `<model>_batch_scoring`: one DAG per model config in `include/configs/`

Scores one day's partition with the version `production` points at when the run starts. The
config's `schedules.scoring` cron (UTC) runs at 02:00 on D+1 with data interval from D 00:00 and
logical date D: it scores `dt=D`, the day that ended. A backfill over a date range makes one run
per day, logical dates at midnight, so each day is scored once.

1. **locate**: the run's partition day (Param `date`, else its logical date, else the day
   before the run, UTC), input `<lake>/incoming/<model>/dt=<date>/`, output
   `<lake>/predictions/<model>/dt=<date>/` (Params `input` and `output` override them, only under
   the lake or `scoring.allowed_locations`: the form's pattern refuses others and this task checks
   again with symlinks resolved) and the decision threshold (Param `threshold`). An output holding
   anything but a partition this bundle wrote is refused here, before any work.
2. **pin_model**: resolves `production` once; every later task loads exactly that version. It
   pins the `challenger` alias too when there is one (shadow mode): every chunk then also writes
   `challenger_probability` and `challenger_version` beside the champion's columns. A challenger
   that fails to pin, load or score is left out of the partition and never fails the run or
   changes the champion's output; the manifest's `challenger` section and the log say why.
3. **wait_for_partition**: waits, deferred (no worker slot), for the input's completion marker
   (`scoring.completion_marker`, `_SUCCESS`, which the producer writes last), up to
   `scoring.wait_hours`; then the run fails naming the path and the wait.
4. **prepare**: checks every input table with the row rules (rows that cannot be scored go to
   `rejects.csv` with their reasons), builds the model's input rows with the SQL the version was
   trained with, and splits them into chunks in the lake's `_staging/` folder. A partition with
   no table files fails the run, naming the path.
5. **score_chunk**: one mapped task per chunk, so Celery workers share a large partition.
6. **publish**: combines the chunks into `predictions.parquet` beside `rejects.csv`, writes
   `_manifest.json` last and swaps the partition in atomically, replacing an earlier run of the
   same date (never foreign files); then updates the Asset `predictions/<model>` with the run's
   counts, which the monitoring DAG listens to.
7. **materialize** (models with an online store, e.g. credit_risk): upserts the partition's
   applicants' history features into the online store with the pinned version's SQL, as of the
   end of the partition's day; a row the store holds as of a later day is kept (a backfill).

No catch-up unless `scoring.catchup`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param, dag, get_current_context, get_parsing_context, task
from tabular_mlops.assets import predictions_asset
from tabular_mlops.config import ModelConfig, load_model_configs
from tabular_mlops.dag_defaults import dag_arguments
from tabular_mlops.partition_wait import WaitForPartition


def _schedule(config: ModelConfig) -> Any:
    """The scoring cron in UTC with a data interval from the scored day's midnight, or None."""
    if config.schedules.scoring is None:
        return None
    from airflow.timetables.trigger import CronTriggerTimetable
    from tabular_mlops.config import day_interval

    # The run at 02:00 on D+1 gets logical date D 00:00: the day that ended is the one it scores.
    cron = config.schedules.scoring
    return CronTriggerTimetable(cron, timezone="UTC", interval=day_interval(cron))


def _location_param(title: str, default: str, config: ModelConfig) -> Param:
    """An input/output Param the trigger form refuses outside the allowed roots (the task checks again)."""
    from tabular_mlops.storage import roots_pattern

    roots = config.scoring.allowed_roots()
    return Param(
        None,
        type=["null", "string"],
        pattern=roots_pattern(roots),
        title=title,
        description=f"Folder or s3:// prefix under {' or '.join(roots)} (the lake, then "
        f"scoring.allowed_locations); empty: {default}.",
    )


def build_scoring_dag(config: ModelConfig) -> object:
    """The batch-scoring DAG of one model config."""
    dag_id = f"{config.name}_batch_scoring"
    asset = predictions_asset(config.name)

    @dag(
        dag_id=dag_id,
        description=f"Batch scoring of {config.name} with its production model",
        doc_md=__doc__,
        schedule=_schedule(config),
        **dag_arguments(config, "scoring", catchup=config.scoring.catchup),
        params={
            "date": Param(
                None,
                type=["null", "string"],
                pattern=r"^\d{4}-\d{2}-\d{2}$",
                title="Partition day",
                description="YYYY-MM-DD; empty: the run's logical date (scheduled and backfill runs: "
                "the day that ended), else the day before the run (UTC).",
            ),
            "input": _location_param("Input partition", "<lake>/incoming/<model>/dt=<date>/", config),
            "output": _location_param("Output partition", "<lake>/predictions/<model>/dt=<date>/", config),
            "threshold": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=1,
                title="Decision threshold",
                description=f"`prediction` is 1 from this probability on (config: {config.model.threshold}).",
            ),
        },
    )
    def batch_scoring() -> None:
        @task
        def locate(params: dict | None = None, run_id: str | None = None) -> dict:
            """The run's partition date, input, output, staging folder and threshold."""
            from airflow.sdk.exceptions import AirflowFailException
            from tabular_mlops.config import get_model_config
            from tabular_mlops.ingest import safe_run_id
            from tabular_mlops.scoring import (
                checked_targets,
                checked_threshold,
                partition,
                run_day,
                staging_location,
            )
            from tabular_mlops.storage import ForbiddenLocation, UnsafeTarget

            cfg = get_model_config(config.name)
            params = params or {}
            context = get_current_context()
            try:  # again here: the REST API and the CLI set Params without the form's pattern
                day = run_day(params.get("date"), context.get("logical_date"), context["dag_run"].run_after)
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from None

            def given(name: str, kind: str) -> str:
                # Only an unset Param means the default: "" is refused like any unusable location.
                value = params.get(name)
                return partition(cfg, kind, day) if value is None else value

            try:  # again here: the REST API and the CLI set Params without the form's pattern
                source, output = checked_targets(
                    cfg, given("input", "incoming"), given("output", "predictions")
                )
            except (ForbiddenLocation, UnsafeTarget) as exc:
                raise AirflowFailException(str(exc)) from None
            run = safe_run_id(run_id or "manual")
            return {
                "day": day.isoformat(),
                "input": source,
                "output": output,
                "staging": staging_location(output, run),
                "threshold": checked_threshold(cfg, params.get("threshold")),
            }

        @task
        def pin_model() -> dict:
            """Resolve production once; the whole run scores with this version."""
            from tabular_mlops.config import get_model_config
            from tabular_mlops.scoring import pin_model as pin

            return pin(get_model_config(config.name)).to_dict()

        @task
        def prepare(where: dict, pinned: dict) -> list[dict]:
            """Validate the partition and stage the rows to score as chunks; fail at once on bad data."""
            from airflow.sdk.exceptions import AirflowFailException
            from tabular_mlops.config import get_model_config
            from tabular_mlops.scoring import PinnedModel, ScoringError
            from tabular_mlops.scoring import prepare as stage
            from tabular_mlops.storage import UnsafeTarget

            log = logging.getLogger("tabular_mlops.scoring")
            try:
                return stage(
                    get_model_config(config.name),
                    PinnedModel(**pinned),
                    where["input"],
                    where["staging"],
                    progress=log.info,
                )
            except (ScoringError, UnsafeTarget) as exc:  # a retry would be refused the same way
                raise AirflowFailException(str(exc)) from exc

        @task(map_index_template="chunk {{ chunk_index }}")
        def score_chunk(chunk: dict, where: dict, pinned: dict, run_id: str | None = None) -> dict:
            """Score one staged chunk with the pinned version."""
            from tabular_mlops.config import get_model_config
            from tabular_mlops.scoring import PinnedModel
            from tabular_mlops.scoring import score_chunk as score

            context = get_current_context()
            context["chunk_index"] = chunk["index"]  # names the mapped task in the UI
            scored_at = context["dag_run"].run_after.isoformat()
            return score(
                get_model_config(config.name),
                PinnedModel(**pinned),
                chunk,
                where["staging"],
                where["threshold"],
                run_id or "manual",
                scored_at,
            )

        @task(trigger_rule="none_failed", outlets=[asset])
        def publish(scored: list[dict], where: dict, pinned: dict, run_id: str | None = None) -> dict:
            """Combine the chunks into the output partition, manifest last; record the counts on the Asset."""
            from airflow.sdk.exceptions import AirflowFailException
            from tabular_mlops.config import get_model_config
            from tabular_mlops.scoring import PinnedModel, ScoringError
            from tabular_mlops.scoring import publish as put
            from tabular_mlops.storage import UnsafeTarget

            context = get_current_context()
            try:
                summary = put(
                    get_model_config(config.name),
                    PinnedModel(**pinned),
                    where["staging"],
                    where["output"],
                    list(scored or []),
                    where["threshold"],
                    run_id or "manual",
                    origin={"dag_id": dag_id, "run_id": run_id or ""},
                    started_at=context["dag_run"].start_date,
                    day=where["day"],
                )
            except (ScoringError, UnsafeTarget) as exc:  # a retry would be refused the same way
                raise AirflowFailException(str(exc)) from exc
            counts = summary["counts"]
            logging.getLogger("tabular_mlops.scoring").info(
                "%s: %s scored + %s rejected = %s input rows; %s positive, mean probability %s; "
                "model version %s; %s s",
                where["output"],
                counts["scored"],
                counts["rejected"],
                counts["input"],
                counts["positives"],
                counts["mean_probability"],
                pinned["version"],
                counts.get("duration_seconds"),
            )
            if (shadow := summary.get("challenger")) is not None:
                logging.getLogger("tabular_mlops.scoring").info(
                    "challenger version %s: %s",
                    shadow["version"],
                    f"scored, mean probability {shadow['mean_probability']}"
                    if shadow["scored"]
                    else f"left out: {shadow['left_out']}",
                )
            context["outlet_events"][asset].extra = {
                "partition": where["output"],
                "day": where["day"],
                "model_version": pinned["version"],
                **counts,
            }
            return summary

        @task(retries=config.retries, retry_exponential_backoff=True)
        def materialize(where: dict, pinned: dict) -> dict:
            """Upsert the partition's applicants' history features into the online store."""
            from tabular_mlops.materialize import after_scoring

            return after_scoring(config.name, where["input"], pinned["version"], where["day"])

        where = locate()
        pinned = pin_model()
        ready = WaitForPartition(task_id="wait_for_partition", model=config.name, where=where)
        chunks = prepare(where, pinned)
        ready >> chunks
        scored = score_chunk.partial(where=where, pinned=pinned).expand(chunk=chunks)
        published = publish(scored, where, pinned)
        if config.features.online:
            published >> materialize(where, pinned)

    return batch_scoring()


_current = get_parsing_context().dag_id
for _name, _config in load_model_configs().items():
    # A task run needs only its own DAG; skip building the others.
    if _current is None or _current == f"{_name}_batch_scoring":
        globals()[f"{_name}_batch_scoring"] = build_scoring_dag(_config)
