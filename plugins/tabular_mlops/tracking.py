"""Where MLflow runs and registered models go, resolved from the environment at call time.

The playbook's variables are honoured: MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI,
MLFLOW_EXPERIMENT_NAME, MLFLOW_S3_ENDPOINT_URL and the AWS credentials (the last two are read by
MLflow's own S3 client); MLFLOW_MODEL_NAME is refused, as it renamed every model at once. A `.env`
file in the project root is read first when present; variables already set win. With nothing set,
an embedded SQLite tracking store and a local artifact folder under `mlruns/` (git-ignored) make
the registry work without a server.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from tabular_mlops import settings

_ENV_LOADED = False


def load_dotenv_once() -> None:
    """Read the project's .env into the environment once; variables already set are kept."""
    global _ENV_LOADED
    if _ENV_LOADED:
        return
    _ENV_LOADED = True
    env_file = settings.project_dir() / ".env"
    if env_file.is_file():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)


def mlflow_dir() -> Path:
    """Folder of the embedded tracking store (MLOPS_MLFLOW_DIR overrides)."""
    return Path(os.environ.get("MLOPS_MLFLOW_DIR", settings.project_dir() / "mlruns")).resolve()


def _embedded_uri() -> str:
    """The embedded SQLite store's URI (its folder is created on first use)."""
    folder = mlflow_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    load_dotenv_once()
    return os.environ.get("MLFLOW_TRACKING_URI") or _embedded_uri()


def is_embedded() -> bool:
    """True when runs go to the embedded store rather than a configured server.

    Compared by value: mlflow.set_tracking_uri (in `configure`) writes MLFLOW_TRACKING_URI into
    the environment, so "the variable is unset" stops being true after the first configure, and
    experiments created later put their artifacts in the working directory's ./mlruns.
    """
    return tracking_uri() == _embedded_uri()


def experiment_name(model: str) -> str:
    """MLFLOW_EXPERIMENT_NAME, else one experiment per model config."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"{model}-training"


RENAME_ENV = "MLFLOW_MODEL_NAME"


def registered_name(config_name: str) -> str:
    """The registry name: the config's `model.registered_name`, one per model.

    MLFLOW_MODEL_NAME used to override it and so gave every model the same name: both trained
    into one registered model and its `production` alias. It is refused rather than ignored, so a
    deployment that still sets it learns why its models moved instead of finding them elsewhere.
    """
    from tabular_mlops.config import ConfigError

    load_dotenv_once()
    if os.environ.get(RENAME_ENV):
        raise ConfigError(
            f"{RENAME_ENV} is set, but it would give every model the same registry name and is no "
            "longer read: set model.registered_name in the model's YAML (include/configs/) and "
            f"unset {RENAME_ENV}; a scratch registry is MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI"
        )
    return config_name


def configure() -> Any:
    """Point the mlflow module at the tracking and registry URIs; return an MlflowClient."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    # Task and CLI logs are files: a download bar per artifact fetch adds thousands of characters.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Not mlflow.set_registry_uri: it writes MLFLOW_REGISTRY_URI into the environment, which would
    # pin the registry of the first call. MLflow reads a user's MLFLOW_REGISTRY_URI by itself and
    # otherwise uses the tracking URI.
    return _client(uri, os.environ.get("MLFLOW_REGISTRY_URI") or uri)


@functools.lru_cache(maxsize=8)
def _client(uri: str, registry: str) -> Any:
    """One MlflowClient per pair of URIs: every stage and alias move asks for one."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=registry)


def ensure_experiment(name: str) -> str:
    """Id of the named experiment, created on first use (embedded store: artifacts under mlruns/)."""
    import mlflow

    client = configure()
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment_id = str(found.experiment_id)
    else:
        location = None
        if is_embedded():
            location = (mlflow_dir() / "artifacts").as_uri()
        experiment_id = str(client.create_experiment(name, artifact_location=location))
    # Always make it the active one: resuming a run (start_run(run_id=...)) refuses when another
    # model's experiment is still active in this process, e.g. after training two models in a row.
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
