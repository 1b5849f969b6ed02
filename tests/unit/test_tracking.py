"""Where the embedded store keeps runs and artifacts, before and after MLflow is configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from tabular_mlops import tracking


def test_experiments_keep_their_artifacts_in_the_embedded_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every experiment, also those created after configure(), stores artifacts under MLOPS_MLFLOW_DIR.

    mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into the environment; a check on the
    variable alone took the store for a server after the first call, and later experiments put
    their artifacts in the working directory.
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLOPS_MLFLOW_DIR", str(tmp_path / "mlruns"))
    monkeypatch.chdir(tmp_path)
    client = tracking.configure()
    assert tracking.is_embedded()
    for name in ("first-experiment", "second-experiment"):
        experiment = client.get_experiment(tracking.ensure_experiment(name))
        assert experiment.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert not tracking.is_embedded()
