"""Where the bundle reads and writes on this machine, resolved from the environment at call time.

Nothing here runs at import: every location is a function, so tests and Airflow workers can point
the bundle elsewhere with environment variables alone.
"""

from __future__ import annotations

import os
from pathlib import Path

# plugins/tabular_mlops/settings.py -> the project root holding dags/, plugins/, include/.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def project_dir() -> Path:
    """Root of the bundle (MLOPS_PROJECT_DIR, else the folder above plugins/)."""
    return Path(os.environ.get("MLOPS_PROJECT_DIR", _PACKAGE_ROOT)).resolve()


def include_dir() -> Path:
    """Folder holding sql/ and configs/."""
    return project_dir() / "include"


def config_dir() -> Path:
    """Folder of the model YAML files (MLOPS_CONFIG_DIR overrides)."""
    return Path(os.environ.get("MLOPS_CONFIG_DIR", include_dir() / "configs")).resolve()


def sql_dir() -> Path:
    """Folder of the feature SQL, one sub-folder per model (MLOPS_SQL_DIR overrides)."""
    return Path(os.environ.get("MLOPS_SQL_DIR", include_dir() / "sql")).resolve()


def data_dir() -> Path:
    """Root of raw, interim and quarantine data (MLOPS_DATA_DIR overrides)."""
    return Path(os.environ.get("MLOPS_DATA_DIR", project_dir() / "data")).resolve()


def reports_dir() -> Path:
    """Root of validation, evaluation and monitoring reports (MLOPS_REPORTS_DIR overrides)."""
    return Path(os.environ.get("MLOPS_REPORTS_DIR", project_dir() / "reports")).resolve()


def evidently_workspace() -> str:
    """Evidently workspace of the monitoring dashboards (MLOPS_EVIDENTLY_WORKSPACE, else <reports>/evidently).

    An s3:// value is returned as given; monitoring_workspace refuses it while the lock has no s3fs.
    """
    value = os.environ.get("MLOPS_EVIDENTLY_WORKSPACE")
    if value and value.startswith("s3://"):
        return value
    return str(Path(value).resolve() if value else reports_dir() / "evidently")


def resolve_location(location: str) -> str:
    """Return an s3:// URI unchanged and a relative local path anchored at the project root."""
    if location.startswith("s3://"):
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else project_dir() / path)
