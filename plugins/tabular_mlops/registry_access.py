"""Least-privilege users of an MLflow server that runs its basic-auth app (`mlops registry-access`).

Run as the MLflow admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), once per deploy and
again after a password change: it pre-creates every model config's experiments and registered model,
so that grants can name them, creates or updates two users and grants them

- the Airflow workers: EDIT on the experiments (runs, logged models, artifacts) and on the registered
  models (new versions, tags, alias moves). Not MANAGE: they cannot delete a model or grant access.
- serving: READ on the training experiments (the version's artifacts) and on the registered models.

With `default_permission = NO_PERMISSIONS` on the server, anything else is closed to both users.
Re-running it is safe: existing resources are kept, passwords and permissions are set to the given ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKERS, SERVING = "workers", "serving"
# Where each user's password comes from; usernames default to these keys' values below.
PASSWORD_VARS = {WORKERS: "MLFLOW_WORKERS_PASSWORD", SERVING: "MLFLOW_SERVING_PASSWORD"}
USERNAME_VARS = {WORKERS: "MLFLOW_WORKERS_USERNAME", SERVING: "MLFLOW_SERVING_USERNAME"}
DEFAULT_USERNAMES = {WORKERS: "airflow-workers", SERVING: "serving"}
MIN_PASSWORD = 12  # the auth app's own policy (mlflow.utils.validation._validate_password)


class RegistryAccessError(ValueError):
    """A missing or invalid setting of the bootstrap, named so the operator can fix it."""


@dataclass(frozen=True)
class Account:
    """One user of the registry and its password."""

    role: str
    username: str
    password: str


@dataclass(frozen=True)
class Grant:
    """One permission of one user on one resource (experiment id or registered model name)."""

    username: str
    resource_type: str
    resource_id: str
    permission: str


def accounts_from_env(env: dict[str, str] | None = None) -> list[Account]:
    """The workers' and serving accounts from the environment; RegistryAccessError names what is missing."""
    env = dict(os.environ) if env is None else env
    accounts = []
    for role in (WORKERS, SERVING):
        username = env.get(USERNAME_VARS[role]) or DEFAULT_USERNAMES[role]
        password = env.get(PASSWORD_VARS[role], "")
        if len(password) < MIN_PASSWORD:
            state = "is not set" if not password else f"is shorter than {MIN_PASSWORD} characters"
            raise RegistryAccessError(f"{PASSWORD_VARS[role]} {state} (password of MLflow user {username!r})")
        accounts.append(Account(role, username, password))
    if accounts[0].username == accounts[1].username:
        names = f"{USERNAME_VARS[WORKERS]} and {USERNAME_VARS[SERVING]}"
        raise RegistryAccessError(f"{names} name the same user {accounts[0].username!r}")
    return accounts


def bundle_resources(config_dir: Path | None = None) -> dict[str, list[str]]:
    """Experiment names (training, monitoring) and registered model names of every model config."""
    from tabular_mlops import tracking
    from tabular_mlops.config import load_model_configs

    configs = load_model_configs(config_dir)
    if not configs:
        raise RegistryAccessError(f"no model configs found in {config_dir or 'the config folder'}")
    return {
        "training": sorted({tracking.experiment_name(name) for name in configs}),
        "monitoring": sorted(f"{name}-monitoring" for name in configs),
        "models": sorted({tracking.registered_name(c.model.registered_name) for c in configs.values()}),
    }


def _ensure_experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id) if found is not None else str(client.create_experiment(name))


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name)


def _ensure_user(auth: Any, account: Account) -> str:
    """Create the user, or set its password when it exists; return what was done."""
    from mlflow.exceptions import RestException

    try:
        auth.create_user(account.username, account.password)
        return "created"
    except RestException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    auth.update_user_password(account.username, account.password)
    return "password updated"


def _apply(auth: Any, grant: Grant) -> None:
    """Grant, replacing an existing grant of the same user on the same resource."""
    from mlflow.exceptions import RestException

    args = (grant.username, grant.resource_type, grant.resource_id)
    try:
        auth.grant_user_permission(*args, grant.permission)
        return
    except RestException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The store has no update for per-user grants: revoke, then grant the wanted level.
    auth.revoke_user_permission(*args)
    auth.grant_user_permission(*args, grant.permission)


def plan_grants(accounts: list[Account], ids: dict[str, str], resources: dict[str, list[str]]) -> list[Grant]:
    """Every grant of the two users, given the experiment ids by name."""
    by_role = {account.role: account.username for account in accounts}
    grants = []
    for name in resources["training"] + resources["monitoring"]:
        grants.append(Grant(by_role[WORKERS], "experiment", ids[name], "EDIT"))
    for name in resources["training"]:
        grants.append(Grant(by_role[SERVING], "experiment", ids[name], "READ"))
    for name in resources["models"]:
        grants.append(Grant(by_role[WORKERS], "registered_model", name, "EDIT"))
        grants.append(Grant(by_role[SERVING], "registered_model", name, "READ"))
    return grants


def bootstrap(tracking_uri: str, accounts: list[Account], config_dir: Path | None = None) -> dict[str, Any]:
    """Create the bundle's experiments, models, users and grants on the server; return a summary."""
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    resources = bundle_resources(config_dir)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    ids = {name: _ensure_experiment(client, name) for name in resources["training"] + resources["monitoring"]}
    for name in resources["models"]:
        _ensure_registered_model(client, name)
    auth = AuthServiceClient(tracking_uri)
    users = {account.username: _ensure_user(auth, account) for account in accounts}
    grants = plan_grants(accounts, ids, resources)
    for grant in grants:
        _apply(auth, grant)
    return {
        "tracking_uri": tracking_uri,
        "users": users,
        "experiments": ids,
        "registered_models": resources["models"],
        "grants": [f"{g.username}: {g.permission} on {g.resource_type} {g.resource_id}" for g in grants],
    }
