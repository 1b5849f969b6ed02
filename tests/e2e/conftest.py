"""Fixtures with real services on loopback (Airflow metadata DB, moto S3, aiosmtpd) and a real registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import Inbox, free_port, wait_for_http

BIN = Path(sys.executable).parent
PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite metadata DB in the session's private AIRFLOW_HOME."""
    result = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{endpoint}/moto-api/")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def aws_connection(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """aws_default pointing at the moto server, set the way deployments set it (AIRFLOW_CONN_*)."""
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


@pytest.fixture
def s3_client(aws_connection: str) -> Any:
    """A boto3 client on the moto server, for the test's own setup and checks."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=aws_connection,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """Bucket `lake` on the moto server, created on first use."""
    name = "lake"
    if name not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket=name)
    return name


def smtp_connection(port: int) -> str:
    """AIRFLOW_CONN_SMTP_DEFAULT for a plain SMTP server on loopback."""
    extra = {"disable_tls": True, "disable_ssl": True, "from_email": "mlops@example.com", "timeout": 5}
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """A real SMTP server (aiosmtpd) on a free loopback port, as `smtp_default`; yields its inbox."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(port))
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def fresh_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh SQLite tracking store and registry for one module's runs; yields its URI."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLOPS_MLFLOW_DIR", str(folder))
        yield uri


def own_registry(patch: pytest.MonkeyPatch, root: Path, configs: Path) -> None:
    """Point MLflow (a SQLite registry), the bundle's data and reports at `root`, configs at `configs`."""
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    patch.setenv("MLOPS_MLFLOW_DIR", str(root))
    patch.setenv("MLOPS_DATA_DIR", str(root / "data"))
    patch.setenv("MLOPS_REPORTS_DIR", str(root / "reports"))
    patch.setenv("MLOPS_CONFIG_DIR", str(configs))


@pytest.fixture(scope="module")
def production_models(
    tmp_path_factory: pytest.TempPathFactory, telco_raw: Path, home_credit_raw: Path
) -> Iterator[dict]:
    """A registry with production versions of both models (trained on the session's generated data),
    configs copied with 300-row scoring chunks so a partition maps to several tasks."""
    from tabular_mlops import registry
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain

    root = tmp_path_factory.mktemp("scoring")
    configs = root / "configs"
    shutil.copytree(PROJECT_DIR / "include" / "configs", configs)
    defaults = yaml.safe_load((configs / "defaults.yaml").read_text())
    defaults["scoring"]["chunk_rows"] = 300
    defaults["scoring"]["wait_hours"] = 0.002  # 7.2 s: a missing partition's wait ends within the test
    (configs / "defaults.yaml").write_text(yaml.safe_dump(defaults))
    with pytest.MonkeyPatch.context() as patch:
        own_registry(patch, root, configs)
        versions = {}
        for model, raw in (("churn", telco_raw), ("credit_risk", home_credit_raw)):
            # Registered, not promoted by the chain: promoting by hand keeps the test off the gate's floors.
            result = run_training_chain(
                get_model_config(model), str(raw), run_id=f"train_{model}", promote=False
            )
            registry.promote(result["registered_name"], result["version"], "test", reason="scoring tests")
            versions[model] = result["version"]
        yield {"root": root, "versions": versions}


@pytest.fixture(scope="module")
def dagbag(airflow_db: str, production_models: dict) -> Any:
    """The bundle's DAGs parsed with the production models' configs (a module may define its own)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh lake and reports folder for one test (MLOPS_LAKE, MLOPS_REPORTS_DIR)."""
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("MLOPS_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path / "lake"


@pytest.fixture
def fresh_windows(production_models: dict) -> None:
    """Forget earlier windows' verdicts so persistence and cool-down start from nothing."""
    from tabular_mlops import tracking
    from tabular_mlops.monitoring import TAG_PREFIX

    client = tracking.configure()
    for name in ("churn-classifier", "credit-risk-classifier"):
        for key in list(client.get_registered_model(name).tags):
            if key.startswith(TAG_PREFIX):
                client.delete_registered_model_tag(name, key)


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; skip without one, except under CI, where that is a failure."""
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if found is None:
        reason = "no Chromium to render the dashboard (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI machines install it first")
        pytest.skip(reason)
    return found
