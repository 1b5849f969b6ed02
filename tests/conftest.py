"""Shared test setup: an isolated Airflow home and bundle folders, and generated data sets.

The environment is set at import, before any test module imports Airflow, so no test ever reads
or writes the developer's own ~/airflow, data/ or reports/.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path | None:
    """The read-only real-data samples (headers and 20 rows per table), when this machine has them."""
    candidates = [os.environ.get("MLOPS_REFERENCE_DIR"), PROJECT_DIR.parent / "shared" / "reference"]
    # CI runs a clean clone somewhere else on the same machine; the samples stay in the workspace.
    candidates.append("/work/shared/reference")
    for candidate in candidates:
        if candidate and (Path(candidate) / "home_credit").is_dir():
            return Path(candidate)
    return None


REFERENCE_DIR = _reference_dir()
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mlops-tests-"))

os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT_DIR / "dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["MLOPS_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ["MLOPS_REPORTS_DIR"] = str(_SESSION_DIR / "reports")
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ.pop("MLOPS_CONFIG_DIR", None)
# Every test signs and verifies model versions as a deployment does; tests of the unsigned laptop
# mode remove the key themselves.
os.environ["MLOPS_MODEL_SIGNING_KEY"] = "tests-" + secrets.token_hex(16)
os.environ.pop("MLOPS_MODEL_SIGNING_PREVIOUS_KEYS", None)
# The machine's Redis is the online store of every test (as on a laptop), under keys of this
# session's own: a developer's store and a parallel run are never read or written.
os.environ.pop("MLOPS_ONLINE_STORE_URL", None)
ONLINE_PREFIX = f"mlops-tests-{secrets.token_hex(4)}:online"
os.environ["MLOPS_ONLINE_STORE_PREFIX"] = ONLINE_PREFIX


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
    _forget_online_keys()


def _forget_online_keys() -> None:
    """Delete the keys this session wrote to the machine's Redis (nothing if it is not running)."""
    try:
        import redis

        client = redis.Redis(socket_connect_timeout=1, socket_timeout=5)
        keys = list(client.scan_iter(match=f"{ONLINE_PREFIX}:*", count=1000))
        if keys:
            client.unlink(*keys)
    except Exception:  # noqa: S110 - cleanup of a scratch namespace; Redis may not run here
        pass


def online_store_or_skip() -> None:
    """Skip (fail under CI) when the machine's Redis, the default online store, is not running."""
    import redis

    try:
        redis.Redis(socket_connect_timeout=1).ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at 127.0.0.1:6379 is not running ({exc}); CI machines start it first")
        pytest.skip(f"Redis at 127.0.0.1:6379 is not running: {exc}")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fresh data/ and reports/ folders for one test."""
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLOPS_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


@pytest.fixture(scope="session")
def telco_raw() -> Path:
    """A clean generated Telco file (2,000 customers), shared read-only by the session."""
    from tabular_mlops.generators.telco import generate_telco

    out = _SESSION_DIR / "raw" / "telco"
    generate_telco(out, rows=2000, seed=11)
    return out


@pytest.fixture
def telco_copy(telco_raw: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the generated Telco folder that a test may corrupt."""
    target = tmp_path / "raw_telco"
    shutil.copytree(telco_raw, target)
    yield target


@pytest.fixture(scope="session")
def home_credit_raw() -> Path:
    """Clean generated Home Credit tables (1,500 applicants), shared read-only by the session."""
    from tabular_mlops.generators.home_credit import generate_home_credit

    out = _SESSION_DIR / "raw" / "home_credit"
    generate_home_credit(out, rows=1500, seed=5)
    return out


@pytest.fixture
def home_credit_copy(home_credit_raw: Path, tmp_path: Path) -> Path:
    """A private copy of the generated Home Credit folder that a test may corrupt."""
    target = tmp_path / "raw_home_credit"
    shutil.copytree(home_credit_raw, target)
    return target


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Folder of the real reference samples; tests that compare against real data skip without it."""
    if REFERENCE_DIR is None:
        pytest.skip("real reference samples not found (set MLOPS_REFERENCE_DIR to ../shared/reference)")
    return REFERENCE_DIR


@pytest.fixture
def python_exe() -> str:
    """The interpreter of the project's virtualenv (the one running the tests)."""
    return sys.executable
