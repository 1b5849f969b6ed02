"""Pieces of batch scoring that need no registry: locations, relaxed rules, chunks, partition swap."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from tabular_mlops import storage
from tabular_mlops.config import get_model_config
from tabular_mlops.contract import acceptance_spec
from tabular_mlops.scoring import (
    _write_chunks,
    checked_threshold,
    partition,
    staging_location,
    tables_to_read,
)


def test_partitions_follow_the_lake_and_staging_sits_beside_them(monkeypatch: pytest.MonkeyPatch) -> None:
    config = get_model_config("churn")
    monkeypatch.setenv("MLOPS_LAKE", "s3://lake/prod")
    assert partition(config, "incoming", "2026-11-20") == "s3://lake/prod/incoming/churn/dt=2026-11-20"
    output = partition(config, "predictions", "2026-11-20")
    assert staging_location(output, "run1") == "s3://lake/prod/predictions/churn/_staging/dt=2026-11-20.run1"


def test_scoring_rejects_only_what_cannot_be_scored() -> None:
    config = get_model_config("churn")
    relaxed = acceptance_spec(config.data.tables["customers"])
    assert "Churn" not in relaxed.columns and relaxed.label is None
    assert relaxed.columns["InternetService"].severity == "warn"
    assert relaxed.columns["customerID"].nullable is False  # a missing id is still a reject


def test_credit_risk_reads_the_applicants_and_every_history_table() -> None:
    tables = tables_to_read(get_model_config("credit_risk"))
    assert tables[0] == "application_test" and "application_train" not in tables and len(tables) == 7
    assert tables_to_read(get_model_config("churn")) == ["customers"]


def test_threshold_override_must_be_a_probability() -> None:
    config = get_model_config("credit_risk")
    assert checked_threshold(config, None) == config.model.threshold
    assert checked_threshold(config, 0.7) == 0.7
    with pytest.raises(ValueError, match="between 0 and 1"):
        checked_threshold(config, 1.5)


def test_chunks_split_rows_in_order_without_loss(tmp_path: Path) -> None:
    pd.DataFrame({"k": range(1000)}).to_parquet(tmp_path / "rows.parquet")
    chunks = _write_chunks(tmp_path / "rows.parquet", 300, tmp_path / "chunks")
    assert [n for _, n in chunks] == [300, 300, 300, 100]
    combined = pd.concat(pd.read_parquet(path) for path, _ in chunks)
    assert combined["k"].tolist() == list(range(1000))
    pd.DataFrame({"k": []}).to_parquet(tmp_path / "empty.parquet")
    assert _write_chunks(tmp_path / "empty.parquet", 300, tmp_path / "none") == []


def _manifest(files: list[str]) -> str:
    """A manifest with the fields scoring writes (what marks a partition as the bundle's)."""
    record = {"model": "churn", "model_version": "1", "run_id": "r", "published_at": "2026-11-20T02:00:00"}
    return json.dumps({**record, "output": {"location": "x", "files": files}})


def test_local_partition_is_replaced_whole_and_needs_its_manifest(tmp_path: Path) -> None:
    target = tmp_path / "lake" / "dt=2026-11-20"
    target.mkdir(parents=True)
    (target / "stale.parquet").write_text("old")
    (target / "_manifest.json").write_text(_manifest(["stale.parquet"]))  # an earlier run's partition
    new = tmp_path / "new"
    new.mkdir()
    (new / "predictions.parquet").write_text("new")
    with pytest.raises(storage.StorageError, match="_manifest.json missing"):
        storage.replace_partition(new, str(target), "aws_default", "_manifest.json")
    assert (target / "stale.parquet").exists()  # a refused publish leaves the old partition
    (new / "_manifest.json").write_text(_manifest(["predictions.parquet"]))
    storage.replace_partition(new, str(target), "aws_default", "_manifest.json")
    assert sorted(p.name for p in target.iterdir()) == ["_manifest.json", "predictions.parquet"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["dt=2026-11-20"]
