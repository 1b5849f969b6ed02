"""A third model made only of YAML and SQL gets its DAGs, its REST schema and its validation.

`tests/fixtures/claims` holds a motor-claims model (one YAML, two SQL files) that no Python file
names. Pointed at by MLOPS_CONFIG_DIR and MLOPS_SQL_DIR, it must get the same three DAGs as the
shipped models, a request schema and value warnings generated from its column contract, and an
ingest whose rules are split between the row rules and Great Expectations as for the others.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from tabular_mlops.config import get_model_config
from tabular_mlops.features import build_feature_table
from tabular_mlops.ingest import ingest_raw_tables

from tests.dags.test_dag_integrity import CONFIGS, _dagbag

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "claims"


@pytest.fixture
def claims_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config folder with the shipped defaults, the shipped models and the claims model."""
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    shutil.copy(FIXTURE / "configs" / "claims.yaml", configs)
    sql = tmp_path / "sql"
    shutil.copytree(CONFIGS.parent / "sql", sql)
    shutil.copytree(FIXTURE / "sql" / "claims", sql / "claims")
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(configs))
    monkeypatch.setenv("MLOPS_SQL_DIR", str(sql))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLOPS_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


def _policies(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    """Policy rows as an export would write them, the claim more likely for young drivers."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows)
    frame = pd.DataFrame(
        {
            "policy_id": [f"P{i:06d}" for i in range(rows)],
            "driver_age": age,
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "vehicle_value": rng.gamma(4.0, 5000.0, rows).round(2),
            "vehicle_age": rng.integers(0, 20, rows),
            "prior_claims": rng.poisson(0.5, rows),
            "channel": rng.choice(["broker", "online", "phone"], rows),
        }
    )
    frame["claimed"] = np.where(rng.random(rows) < np.where(age < 25, 0.5, 0.15), "yes", "no")
    return frame.astype({"prior_claims": "object", "driver_age": "object", "region": "object"})


def test_the_third_model_gets_its_three_dags(claims_home: Path) -> None:
    bag = _dagbag(claims_home / "configs")
    assert bag["errors"] == {}
    assert {"claims_training", "claims_batch_scoring", "claims_monitoring", "claims_registry"} <= set(
        bag["dags"]
    )
    assert bag["dags"]["claims_training"]["tasks"][0] == "data_ingest"
    assert bag["dags"]["claims_monitoring"]["tasks"] == [
        "measure",
        "alert",
        "request_retrain",
        "propose_challenger",
    ]


def test_the_third_model_gets_its_rest_schema(claims_home: Path) -> None:
    from serving.schemas import RecordChecker, request_model

    config = get_model_config("claims")
    request = request_model(config)
    schema = request.model_json_schema()
    assert set(schema["required"]) == {"policy_id", "driver_age"}  # the label is never asked for
    assert "claimed" not in schema["properties"]
    record = {"policy_id": "P000001", "driver_age": 40, "region": "central", "prior_claims": 9}
    parsed = request.model_validate(record)
    warnings = RecordChecker(config).warnings([parsed.model_dump()])
    assert {(w["field"], w["problem"]) for w in warnings} == {
        ("region", "not in the allowed set"),  # unseen category: scored, with a warning
        ("prior_claims", "above maximum 5"),
    }
    with pytest.raises(ValidationError, match="driver_age"):
        request.model_validate({"policy_id": "P000002", "driver_age": "forty"})  # wrong type: rejected


def test_the_third_model_gets_its_validation(claims_home: Path) -> None:
    frame = _policies()
    frame.loc[3, "policy_id"] = "X12"  # pattern, error: quarantined
    frame.loc[5, "driver_age"] = "forty"  # not an integer: quarantined
    frame.loc[7, "prior_claims"] = 9  # above a warn maximum: kept, reported by GX
    raw = claims_home / "raw"
    raw.mkdir()
    frame.to_csv(raw / "policies.csv", index=False)

    report = ingest_raw_tables(get_model_config("claims"), source=str(raw), run_id="third")
    table = report.tables["policies"]
    assert (table.rows_read, table.rows_quarantined, table.rows_written) == (400, 2, 398)
    assert table.quarantine_reasons == {
        "policy_id: does not match ^P[0-9]{6}$": 1,
        "driver_age: not an integer": 1,
    }
    assert report.status == "passed_with_warnings"
    [warning] = report.warnings
    assert (warning.column, warning.expectation, warning.unexpected_count) == (
        "prior_claims",
        "expect_column_values_to_be_between",
        1,
    )
    layers = {(r["column"], r["rule"]): r["layer"] for r in report.rules}
    assert layers[("policy_id", "does not match ^P[0-9]{6}$")] == "row_rules"
    assert layers[("prior_claims", "above maximum 5")] == "great_expectations"
    assert layers[("policy_id", "key unique")] == "duckdb"
    saved = json.loads((Path(report.report_dir or "") / "validation.json").read_text())
    assert saved["rules"] == report.rules

    features = build_feature_table(
        get_model_config("claims"), Path(report.interim_dir or ""), claims_home / "f"
    )
    assert features.rows == 398 and "value_per_year" in features.columns
