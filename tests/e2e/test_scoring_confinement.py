"""Hostile `input`/`output` values against the real scoring DAG, the CLI and moto's S3 server.

The form's pattern is Airflow's own Param validation (create_dagrun refuses the run); the task's
check is seen where a pattern cannot judge (a symlink) or is bypassed (roots changed since parsing).
Foreign files and objects must come out byte-identical.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"


def _day(day: int) -> datetime:
    return datetime(2026, 11, day, 2, 0, tzinfo=UTC)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _objects(s3: Any, bucket: str) -> dict[str, str]:
    """Every object of a bucket with the sha256 of its bytes."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: hashlib.sha256(s3.get_object(Bucket=bucket, Key=k)["Body"].read()).hexdigest() for k in keys}


def _incoming(telco_raw: Path, folder: Path, rows: int = 300) -> Path:
    frame = pd.read_csv(telco_raw / TELCO_FILE, dtype=str, keep_default_na=False).head(rows)
    folder.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["Churn"]).to_csv(folder / TELCO_FILE, index=False)
    return folder / TELCO_FILE


def _foreign(folder: Path) -> Path:
    (folder / "1" / "abc123" / "artifacts").mkdir(parents=True)
    (folder / "1" / "abc123" / "artifacts" / "model.pkl").write_bytes(os.urandom(512))
    (folder / "1" / "meta.yaml").write_text("experiment_id: '1'\n")
    return folder


def _locate_failure(run: Any) -> tuple[list[str], int]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(run_id=run.run_id).all()
        locate = next(ti for ti in tis if ti.task_id == "locate")
        return [ti.task_id for ti in tis if ti.state == "success"], locate.try_number


def _output(capfd: Any) -> str:
    """What the tasks printed or logged so far (dag.test runs them in this process)."""
    out, err = capfd.readouterr()
    return out + err


@pytest.fixture
def parse_time_lake(production_models: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The lake the DAGs were parsed with (no MLOPS_LAKE: <data dir>/lake), so the form allows it."""
    from tabular_mlops import settings
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import lake_root

    monkeypatch.delenv("MLOPS_LAKE", raising=False)
    lake = Path(os.path.realpath(settings.resolve_location(lake_root(get_model_config("churn")))))
    lake.mkdir(parents=True, exist_ok=True)
    return lake


HOSTILE = [
    "s3://mlflow/1",
    "s3://lake-evil/predictions/churn/dt=2026-11-20",
    "file:///etc",
    "http://127.0.0.1:5000/api",
    "/etc/cron.d",
    "",
]


def test_the_trigger_form_refuses_locations_outside_the_allowed_roots(dagbag, parse_time_lake: Path) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.get_dag("churn_batch_scoring")
    for name in ("input", "output"):
        for value in [*HOSTILE, f"{parse_time_lake}/predictions/../../../etc"]:
            with pytest.raises(ParamValidationError):
                copy.deepcopy(dag.params.get_param(name)).resolve(value)
        good = f"{parse_time_lake}/predictions/churn/dt=2026-11-20"
        assert copy.deepcopy(dag.params.get_param(name)).resolve(good) == good
    with pytest.raises(ParamValidationError, match="does not match"):
        dag.test(logical_date=_day(27), run_conf={"output": "s3://mlflow/1"})  # no run is created


def test_the_task_refuses_a_symlink_escaping_the_lake_and_a_stale_form(
    dagbag, parse_time_lake: Path, telco_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    dag = dagbag.get_dag("churn_batch_scoring")
    _incoming(telco_raw, parse_time_lake / "incoming" / "churn" / "dt=2026-11-27")
    victim = _foreign(tmp_path / "victim")
    before = _snapshot(victim)
    (parse_time_lake / "predictions").mkdir(exist_ok=True)
    link = parse_time_lake / "predictions" / "escape"
    link.symlink_to(victim, target_is_directory=True)
    try:
        run = dag.test(logical_date=_day(27), run_conf={"output": f"{link}/1"})  # the pattern passes
    finally:
        link.unlink()
    assert run.state == "failed"
    succeeded, tries = _locate_failure(run)
    assert "locate" not in succeeded and "publish" not in succeeded and tries == 1  # no retry
    assert _snapshot(victim) == before
    assert f"output='{link}/1' (resolves to {victim}/1) is outside the allowed roots" in _output(capfd)
    # The roots at run time win over the ones the form was built with (REST API, CLI, a moved lake).
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "new_lake"))
    run = dag.test(
        logical_date=_day(28), run_conf={"input": f"{parse_time_lake}/incoming/churn/dt=2026-11-27"}
    )
    assert run.state == "failed" and "locate" not in _locate_failure(run)[0]
    assert f"input='{parse_time_lake}/incoming/churn/dt=2026-11-27' is outside the allowed roots" in _output(
        capfd
    )


def test_output_over_foreign_files_inside_the_lake_is_refused_before_any_work(
    dagbag, parse_time_lake: Path, telco_raw: Path, capfd
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import score_partition
    from tabular_mlops.storage import UnsafeTarget

    incoming = _incoming(telco_raw, parse_time_lake / "incoming" / "churn" / "dt=2026-11-26").parent
    target = _foreign(parse_time_lake / "predictions" / "churn" / "mlruns")
    before = _snapshot(parse_time_lake / "predictions")
    run = dagbag.get_dag("churn_batch_scoring").test(
        logical_date=_day(26), run_conf={"input": str(incoming), "output": str(target)}
    )
    assert run.state == "failed" and "locate" not in _locate_failure(run)[0]
    assert f"{target}: refusing to replace or delete it: it has no manifest of this bundle" in _output(capfd)
    with pytest.raises(UnsafeTarget, match=r"mlruns: refusing .* 1/abc123/artifacts/model.pkl"):
        score_partition(get_model_config("churn"), str(incoming), str(target), run_id="hostile")
    assert _snapshot(parse_time_lake / "predictions") == before  # nothing deleted, no staging left


def test_s3_output_over_mlflow_artifacts_is_refused_and_every_object_intact(
    production_models: dict, s3_client: Any, bucket: str, telco_raw: Path, tmp_path: Path, monkeypatch
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import score_partition
    from tabular_mlops.storage import ForbiddenLocation, UnsafeTarget

    from tests.helpers import last_json, run_mlops

    s3 = s3_client
    s3.create_bucket(Bucket="mlflow")
    for key in ("1/abc123/artifacts/model/model.pkl", "1/abc123/meta.yaml", "1/meta.yaml"):
        s3.put_object(Bucket="mlflow", Key=key, Body=os.urandom(128))
    before = _objects(s3, "mlflow")
    monkeypatch.setenv("MLOPS_LAKE", "s3://lake/prod")
    s3.upload_file(
        str(_incoming(telco_raw, tmp_path / "in")), "lake", f"prod/incoming/churn/dt=2026-11-20/{TELCO_FILE}"
    )
    source = "s3://lake/prod/incoming/churn/dt=2026-11-20"
    config = get_model_config("churn")
    with pytest.raises(
        ForbiddenLocation, match=r"output='s3://mlflow/1' is outside the allowed roots: s3://lake/prod"
    ):
        score_partition(config, source, "s3://mlflow/1")
    result = run_mlops("score", "--model", "churn", "--date", "2026-11-20", "--output", "s3://mlflow/1")
    assert result.returncode == 2 and last_json(result)["status"] == "refused"
    assert "--output='s3://mlflow/1' is outside the allowed roots" in result.stderr
    assert "Traceback" not in result.stderr
    # Even under an allowed root, a prefix holding foreign objects is never replaced.
    opened = config.model_copy(
        update={"scoring": config.scoring.model_copy(update={"allowed_locations": ["s3://mlflow"]})}
    )
    with pytest.raises(UnsafeTarget, match=r"s3://mlflow/1: refusing .* abc123/artifacts/model/model.pkl"):
        score_partition(opened, source, "s3://mlflow/1", run_id="hostile")
    assert _objects(s3, "mlflow") == before  # nothing deleted, nothing staged there


def test_s3_republish_over_our_own_partition_and_after_a_publish_cut_short(
    production_models: dict, s3_client: Any, bucket: str, telco_raw: Path, tmp_path: Path, monkeypatch
) -> None:
    from tabular_mlops import storage
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import score_partition

    s3 = s3_client
    monkeypatch.setenv("MLOPS_LAKE", "s3://lake/again")
    s3.upload_file(
        str(_incoming(telco_raw, tmp_path / "in")), "lake", f"again/incoming/churn/dt=2026-11-21/{TELCO_FILE}"
    )
    config = get_model_config("churn")
    source, output = (
        "s3://lake/again/incoming/churn/dt=2026-11-21",
        "s3://lake/again/predictions/churn/dt=2026-11-21",
    )
    score_partition(config, source, output, run_id="first")
    prefix = "again/predictions/churn/dt=2026-11-21/"
    # A publish cut short: the owner marker claims the files, the old manifest already gone.
    storage.claim(
        output, ["predictions.parquet", "inputs.parquet", "rejects.csv", "_manifest.json"], "aws_default"
    )
    s3.delete_object(Bucket="lake", Key=f"{prefix}_manifest.json")
    score_partition(config, source, output, run_id="second")
    keys = sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="again/predictions/")["Contents"]
    )
    assert keys == [
        f"{prefix}{n}" for n in ("_manifest.json", "inputs.parquet", "predictions.parquet", "rejects.csv")
    ]
    manifest = json.loads(s3.get_object(Bucket="lake", Key=f"{prefix}_manifest.json")["Body"].read())
    assert manifest["run_id"] == "second" and manifest["counts"]["scored"] == 300
