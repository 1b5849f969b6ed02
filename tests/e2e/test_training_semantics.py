"""Training semantics on real runs: a split that holds as data grows, a held-out monitoring
reference, gain importances, and a dry run that leaves the registry as it found it.

Real ingest, feature SQL, LightGBM and a real SQLite MLflow registry on generated Telco data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

TELCO_FILE = "WA_Fn-UseC_-Telco-Customer-Churn.csv"
KEY = "customerID"


@pytest.fixture
def tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store and registry for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPS_MLFLOW_DIR", str(tmp_path / "mlflow"))
    return uri


@pytest.fixture(scope="module")
def telco_grown(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One generated Telco file of 3,000 customers and a folder with only its first 2,000 rows."""
    from tabular_mlops.generators.telco import generate_telco

    root = tmp_path_factory.mktemp("telco_grown")
    generate_telco(root / "all", rows=3000, seed=21)
    frame = pd.read_csv(root / "all" / TELCO_FILE, dtype=str, keep_default_na=False)
    (root / "part").mkdir()
    frame.head(2000).to_csv(root / "part" / TELCO_FILE, index=False)
    return {"part": root / "part", "all": root / "all"}


def _dry_run_train(raw: Path, run: str) -> dict[str, Any]:
    """Ingest, features and a dry-run train of churn; the run's test rows, reference and ids."""
    import mlflow
    from tabular_mlops.config import get_model_config
    from tabular_mlops.ingest import ingest_raw_tables
    from tabular_mlops.pipeline import build_features, train
    from tabular_mlops.training import REFERENCE_FILE, TEST_ROWS, work_dir_for

    config = get_model_config("churn")
    report = ingest_raw_tables(config, source=str(raw), run_id=run)
    features = build_features("churn", str(report.interim_dir), run)
    result = train("churn", str(report.interim_dir), features, dry_run=True)
    reference = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=result["run_id"], artifact_path=f"monitoring/{REFERENCE_FILE}"
        )
    )
    customers = pd.read_parquet(Path(str(report.interim_dir)) / "customers.parquet")
    return {
        **result,
        "test": pd.read_parquet(work_dir_for(config, result["run_id"]) / TEST_ROWS),
        "reference": reference,
        "customers": customers,
        "params": mlflow.get_run(result["run_id"]).data.params,
    }


@pytest.fixture(scope="module")
def grown_runs(
    telco_grown: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, Any]]]:
    """v1 trained on the first 2,000 customers, v2 on all 3,000 (dry runs, own store and folders)."""
    root = tmp_path_factory.mktemp("grown_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("MLOPS_MLFLOW_DIR", str(root / "mlflow"))
        patch.setenv("MLOPS_DATA_DIR", str(root / "data"))
        patch.setenv("MLOPS_REPORTS_DIR", str(root / "reports"))
        yield {
            "v1": _dry_run_train(telco_grown["part"], "v1"),
            "v2": _dry_run_train(telco_grown["all"], "v2"),
        }


def _training_ids(run: dict[str, Any]) -> set[str]:
    """Everything the run saw that is neither a test row nor a validation (reference) row."""
    held_out = set(run["test"][KEY]) | set(run["reference"][KEY])
    return set(run["customers"][KEY]) - held_out


def test_no_v1_training_customer_is_in_v2_test_rows(grown_runs: dict[str, dict[str, Any]]) -> None:
    v1, v2 = grown_runs["v1"], grown_runs["v2"]
    assert not _training_ids(v1) & set(v2["test"][KEY])
    # Growth only adds rows to each side: v1's test customers are still test customers in v2.
    assert set(v1["test"][KEY]) <= set(v2["test"][KEY])
    total = len(v2["customers"])
    rows = {part: int(v2["params"][f"rows.{part}"]) for part in ("train", "valid", "test")}
    assert sum(rows.values()) == total
    # The configured 70/10/20 within about four standard deviations of a 3,000-row draw.
    assert abs(rows["test"] / total - 0.2) < 0.03 and abs(rows["valid"] / total - 0.1) < 0.025
    # Not stratified, but the test rows' churn rate stays near the whole file's.
    overall = (v2["customers"]["Churn"] == "Yes").mean()
    assert abs((v2["test"]["__label"] == 1).mean() - overall) < 0.05


def test_the_reference_holds_validation_rows_with_the_models_own_probabilities(
    grown_runs: dict[str, dict[str, Any]],
) -> None:
    from tabular_mlops import signing, tracking
    from tabular_mlops.training import REFERENCE_PROBABILITY, signature_frame

    v2 = grown_runs["v2"]
    reference = v2["reference"]
    # Every validation row (fewer than monitoring.reference_rows), none of them a test row.
    assert len(reference) == int(v2["params"]["rows.valid"])
    assert not set(reference[KEY]) & set(v2["test"][KEY])
    tracking.configure()
    model = signing.load_verified_run("churn-classifier", v2["run_id"])
    rows = v2["customers"].set_index(KEY).loc[reference[KEY]].reset_index().drop(columns=["Churn"])
    expected = model.predict(signature_frame(rows))["probability"].to_numpy()
    np.testing.assert_allclose(reference[REFERENCE_PROBABILITY].to_numpy(), expected, rtol=0, atol=1e-9)


def test_logged_lightgbm_importance_is_normalised_total_gain(grown_runs: dict[str, dict[str, Any]]) -> None:
    import mlflow
    from tabular_mlops import signing, tracking

    run_id = grown_runs["v2"]["run_id"]
    tracking.configure()
    classifier = signing.load_verified_run("churn-classifier", run_id).unwrap_python_model()
    booster = classifier.estimator.booster_
    # LightGBM's own feature names replace spaces; the encoder's are the ones the bundle logs.
    names = classifier.preprocessor.get_feature_names_out()
    gain = pd.Series(booster.feature_importance(importance_type="gain"), index=names)
    logged = pd.Series(mlflow.artifacts.load_dict(f"runs:/{run_id}/features/importance.json"))
    expected = (gain / gain.sum()).round(6)
    assert len(logged) == len(expected)
    np.testing.assert_allclose(logged.to_numpy(), expected.loc[logged.index].to_numpy(), atol=1e-6)


def _registry_state(name: str) -> dict[str, Any]:
    from mlflow import MlflowClient
    from tabular_mlops import registry

    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "versions": sorted((str(v.version), tuple(sorted(v.tags.items())), v.description) for v in versions),
        "aliases": dict(client.get_registered_model(name).aliases),
        "history": registry.history(name),
        "production": registry.alias_version(name, registry.PRODUCTION),
    }


def test_a_dry_run_changes_nothing_in_the_registry(
    tracking_store: str, telco_raw: Path, workspace: Path
) -> None:
    import mlflow
    from tabular_mlops import registry, signing, tracking
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain
    from tabular_mlops.promotion import GateOverrides

    config = get_model_config("churn")
    first = run_training_chain(config, str(telco_raw), run_id="first", promote=False)
    name = first["registered_name"]
    registry.promote(name, first["version"], "test", reason="a production to compare against")
    before = _registry_state(name)

    low = GateOverrides(min_auc=0.6, min_accuracy=0.6)
    dry = run_training_chain(config, str(telco_raw), run_id="dry", overrides=low, dry_run=True)
    assert _registry_state(name) == before
    assert dry["version"] is None and dry["promoted"] is False and dry["gate"]["passed"] is True
    # The candidate was still judged against production, and the run holds metrics and verdict.
    assert dry["production_version"] == first["version"] and dry["metrics"]["production"]
    run = mlflow.get_run(dry["run_id"])
    assert run.data.tags["gate.passed"] == "true" and "test_roc_auc" in run.data.metrics
    evaluation = mlflow.MlflowClient().list_artifacts(dry["run_id"], "evaluation")
    assert "evaluation/gate_verdict.json" in {a.path for a in evaluation}

    # The run's model is signed for the run alone: a version's signature copied onto it is refused.
    signing.load_verified_run(name, dry["run_id"])
    version_tag = mlflow.MlflowClient().get_model_version(name, first["version"]).tags[signing.SIGNATURE_TAG]
    tracking.configure().set_tag(dry["run_id"], signing.SIGNATURE_TAG, version_tag)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.load_verified_run(name, dry["run_id"])


def test_the_calibrator_is_fitted_on_the_validation_rows_probabilities(
    grown_runs: dict[str, dict[str, Any]],
) -> None:
    from tabular_mlops.estimation import fit_calibrator, load_calibrator
    from tabular_mlops.training import REFERENCE_PROBABILITY

    v2 = grown_runs["v2"]
    calibrator, source = load_calibrator(v2["run_id"])
    assert calibrator is not None, source
    assert calibrator.rows == int(v2["params"]["rows.valid"])
    assert calibrator.fitted_on.startswith("validation")
    # The reference holds every validation row with the version's probability: refitting on them
    # with their labels gives the logged map, so no training or test row went into it.
    reference = v2["reference"]
    churned = v2["customers"].set_index(KEY).loc[reference[KEY], "Churn"].eq("Yes").astype(int)
    expected = fit_calibrator(churned.to_numpy(), reference[REFERENCE_PROBABILITY].to_numpy())
    assert (calibrator.x, calibrator.y, calibrator.positives) == (expected.x, expected.y, expected.positives)
