"""Only versions this bundle made are loaded: a foreign version pointed at by `production` never runs.

The foreign version is what an attacker with registry write access would register: a pyfunc whose
`load_context` runs code (here: writes a marker file). Serving (a real gunicorn), batch scoring,
monitoring and promotion must all refuse it before unpickling it, so the marker never appears.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest

from tests.e2e.test_serving import TELCO_FILE, _start, _telco_records, _wait_ready
from tests.helpers import free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
API_KEY = "signing-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def churn_registry(tmp_path_factory: pytest.TempPathFactory, telco_raw: Path) -> Iterator[dict]:
    """A registry holding one signed churn version in production (configs: churn only)."""
    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain

    root = tmp_path_factory.mktemp("signing")
    configs = root / "configs"
    configs.mkdir()
    for name in ("defaults.yaml", "churn.yaml"):
        shutil.copy(PROJECT_DIR / "include" / "configs" / name, configs / name)
    with pytest.MonkeyPatch.context() as patch:
        # The embedded store in the module's folder: artifacts land under root/artifacts, not ./mlruns.
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("MLOPS_MLFLOW_DIR", str(root))
        patch.setenv("MLOPS_DATA_DIR", str(root / "data"))
        patch.setenv("MLOPS_REPORTS_DIR", str(root / "reports"))
        patch.setenv("MLOPS_CONFIG_DIR", str(configs))
        result = run_training_chain(get_model_config("churn"), str(telco_raw), run_id="sign", promote=False)
        registry.promote(result["registered_name"], result["version"], "test", reason="signing tests")
        yield {"root": root, "name": result["registered_name"], "version": result["version"]}


def _register_foreign(name: str, marker: Path) -> str:
    """What an attacker with registry write access registers: code that runs when loaded."""
    import mlflow
    import mlflow.pyfunc
    from mlflow import MlflowClient

    class Foreign(mlflow.pyfunc.PythonModel):  # defined here: cloudpickle ships it by value
        def __init__(self, path: str) -> None:
            self.path = path

        def load_context(self, context: Any) -> None:
            Path(self.path).write_text("foreign code ran")

        def predict(self, context: Any, model_input: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"probability": [0.999] * len(model_input)})

    with mlflow.start_run(run_name="not-the-bundle") as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Foreign(str(marker)))
    # MLflow loads the model once while logging it (to infer its requirements): that ran the
    # foreign code in the attacker's own process. What matters is that no consumer runs it again.
    marker.unlink(missing_ok=True)
    client = MlflowClient()
    return str(client.create_model_version(name, info.model_uri, run_id=run.info.run_id).version)


def _point_production_at(name: str, version: str) -> None:
    """Move the alias the way an attacker would: straight through the registry API, past the gate."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, "production", version)


def _wait_for_health_error(url: str, needle: str, timeout: float = 60) -> dict:
    """/health once serving has tried the new production version and recorded why it refused it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/health", timeout=5).json()
        if needle in health["errors"].get("churn", ""):
            return health
        time.sleep(0.5)
    raise AssertionError(f"/health never named {needle!r}: {health}")


def _telco_partition(telco_raw: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(telco_raw / TELCO_FILE, keep_default_na=False).head(200).drop(columns=["Churn"])
    frame.to_csv(folder / TELCO_FILE, index=False)


def test_a_foreign_production_version_is_never_loaded_served_scored_or_promoted(
    churn_registry: dict, telco_raw: Path, tmp_path: Path
) -> None:
    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import MonitoringError, measure
    from tabular_mlops.scoring import ScoringError, partition, score_partition

    name, good = churn_registry["name"], churn_registry["version"]
    config = get_model_config("churn")
    marker = tmp_path / "foreign-code-ran"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _start(port, {"SERVING_API_KEY": API_KEY, "SERVING_RELOAD_SECONDS": "1"})
    try:
        _wait_ready(url, process)
        record = _telco_records(telco_raw, 1)[0]
        foreign = _register_foreign(name, marker)
        _point_production_at(name, foreign)

        health = _wait_for_health_error(url, f"version {foreign} is not signed")
        assert health["versions"] == {"churn": good}, "serving swapped in the foreign version"
        assert health["signing"]["verified"] is True and "key_id" in health["signing"]
        answer = httpx.post(f"{url}/v1/models/churn/predict", json=record, headers=AUTH, timeout=10)
        assert answer.status_code == 200 and answer.json()["model_version"] == good

        day = "2026-11-30"
        _telco_partition(telco_raw, Path(partition(config, "incoming", day)))
        output = partition(config, "predictions", day)
        with pytest.raises(
            ScoringError, match=f"refusing to score with {name} version {foreign} is not signed"
        ):
            score_partition(config, partition(config, "incoming", day), output, run_id="foreign")

        # A partition the good version scored, whose manifest was edited to name the foreign one.
        score_partition(
            config, partition(config, "incoming", day), output, version=good, run_id="good", day=day
        )
        manifest_path = Path(output) / "_manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest_path.write_text(json.dumps({**manifest, "model_version": foreign}))
        with pytest.raises(MonitoringError, match=f"refusing to monitor with {name} version {foreign}"):
            measure(config, current=output)

        with pytest.raises(registry.RegistryError, match=f"refusing to promote: {name} version {foreign}"):
            registry.promote(name, foreign, "test", reason="must be refused")
    finally:
        process.terminate()
        process.wait(timeout=30)
        _point_production_at(name, good)
    assert not marker.exists(), "the foreign version's code ran"


def test_a_copied_signature_or_changed_bytes_are_refused_before_unpickling(
    churn_registry: dict, tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from tabular_mlops import signing
    from tabular_mlops.scoring import PinnedModel, ScoringError, load_pinned

    name, good = churn_registry["name"], churn_registry["version"]
    marker = tmp_path / "foreign-code-ran"
    foreign = _register_foreign(name, marker)
    client = MlflowClient()
    copied = client.get_model_version(name, good).tags[signing.SIGNATURE_TAG]
    client.set_model_version_tag(name, foreign, signing.SIGNATURE_TAG, copied)
    with pytest.raises(ScoringError, match=f"version {foreign}: its artifacts changed after signing"):
        load_pinned(PinnedModel(name, foreign))

    # The good version's own artifacts registered again (a replay) with its tag copied: refused too.
    source = client.get_model_version(name, good).source
    replay = str(client.create_model_version(name, source, run_id=None).version)
    client.set_model_version_tag(name, replay, signing.SIGNATURE_TAG, copied)
    with pytest.raises(ScoringError, match=f"version {replay}: its artifacts changed after signing"):
        load_pinned(PinnedModel(name, replay))

    # Signed by the key holder, then one byte of the pickle changed in the artifact store.
    signing.sign(name, foreign)
    model_id = client.get_model_version(name, foreign).source.removeprefix("models:/")
    stored = Path(urlparse(mlflow.get_logged_model(model_id).artifact_location).path) / "python_model.pkl"
    assert stored.is_file()
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(ScoringError, match=f"version {foreign}: its artifacts changed after signing"):
        load_pinned(PinnedModel(name, foreign))
    assert not marker.exists(), "the foreign version's code ran"


def test_key_rotation_verifies_with_the_previous_key_until_versions_are_resigned(
    churn_registry: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tabular_mlops import signing
    from tabular_mlops.cli import main

    name, good = churn_registry["name"], churn_registry["version"]
    old = signing.signing_keys().current
    assert old is not None
    monkeypatch.setenv(signing.KEY_ENV, "the-new-signing-key-0123456789")
    with pytest.raises(signing.SignatureError, match="which is not configured here"):
        signing.verify_version(name, good)
    monkeypatch.setenv(signing.PREVIOUS_KEYS_ENV, old.decode())
    assert signing.verify_version(name, good) == signing.key_id(old)
    assert main(["sign", "--model", "churn", "--version", good]) == 0
    monkeypatch.delenv(signing.PREVIOUS_KEYS_ENV)
    assert main(["sign", "--model", "churn", "--version", good, "--check"]) == 0
    assert signing.verify_version(name, good) == signing.key_id(b"the-new-signing-key-0123456789")
    monkeypatch.setenv(signing.KEY_ENV, old.decode())
    assert main(["sign", "--model", "churn", "--version", good, "--check"]) == 1  # refused, no traceback
    monkeypatch.setenv(signing.PREVIOUS_KEYS_ENV, "the-new-signing-key-0123456789")
    assert main(["sign", "--model", "churn", "--version", good]) == 0  # back to the module's key


def test_without_a_key_versions_load_unverified_and_say_so(
    churn_registry: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The laptop mode, and the control of the tests above: unverified, the foreign code does run."""
    from tabular_mlops import signing

    name = churn_registry["name"]
    marker = tmp_path / "foreign-code-ran"
    foreign = _register_foreign(name, marker)
    monkeypatch.delenv(signing.KEY_ENV)
    # A handler of its own: MLflow and Airflow may reconfigure the root logger (and drop caplog's).
    said = io.StringIO()
    handler = logging.StreamHandler(said)
    logging.getLogger(signing.__name__).addHandler(handler)
    try:
        assert signing.sign(name, foreign) is None
        signing.load_verified(name, foreign)
    finally:
        logging.getLogger(signing.__name__).removeHandler(handler)
    assert "registered UNSIGNED" in said.getvalue()
    assert (
        f"MODEL SIGNATURES ARE NOT CHECKED: MLOPS_MODEL_SIGNING_KEY is not set, so {name} version"
        in said.getvalue()
    )
    assert marker.exists(), "the control failed: the foreign model did not run even unverified"
