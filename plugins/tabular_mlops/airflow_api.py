"""Airflow's public REST API, as `mlops approve` and `mlops reject` use it.

The answer goes through the same route as the UI's Required Actions page
(`PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails`), so Airflow checks
who may answer, records who did and resumes the task. Where: AIRFLOW_API_URL (default
http://127.0.0.1:8080). Who: AIRFLOW_API_TOKEN, else AIRFLOW_USERNAME and AIRFLOW_PASSWORD
exchanged for a token at /auth/token (the FAB and simple auth managers both offer it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

URL_ENV, TOKEN_ENV = "AIRFLOW_API_URL", "AIRFLOW_API_TOKEN"
USER_ENV, PASSWORD_ENV = "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD"
DEFAULT_URL = "http://127.0.0.1:8080"


class AirflowApiError(RuntimeError):
    """A call Airflow refused or could not take, with what to do about it."""


@dataclass
class AirflowApi:
    """A logged-in client of one Airflow api-server."""

    base: str
    token: str

    @classmethod
    def from_env(cls) -> AirflowApi:
        """The api-server and credentials the environment names."""
        base = os.environ.get(URL_ENV, DEFAULT_URL).rstrip("/")
        token = os.environ.get(TOKEN_ENV) or _login(base)
        return cls(base, token)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call under /api/v2; the JSON answer, or AirflowApiError naming the refusal."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            response = httpx.request(
                method, f"{self.base}/api/v2{path}", headers=headers, timeout=30, **kwargs
            )
        except httpx.HTTPError as exc:
            raise AirflowApiError(f"Airflow at {self.base} did not answer ({exc}); set {URL_ENV}") from None
        if response.status_code >= 400:
            raise AirflowApiError(_refusal(response.status_code, _detail(response), path))
        return response.json()


def _login(base: str) -> str:
    import httpx

    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if not user or not password:
        raise AirflowApiError(f"set {TOKEN_ENV}, or {USER_ENV} and {PASSWORD_ENV}, to answer as yourself")
    try:
        response = httpx.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=30)
    except httpx.HTTPError as exc:
        raise AirflowApiError(f"Airflow at {base} did not answer ({exc}); set {URL_ENV}") from None
    if response.status_code >= 400:
        raise AirflowApiError(f"Airflow refused the login of {user!r} ({response.status_code})")
    return str(response.json()["access_token"])


def _detail(response: Any) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:300]


def _refusal(status: int, detail: str, path: str) -> str:
    meaning = {
        401: "not logged in (token expired or wrong)",
        403: "you may not answer this task (not one of promotion.approvers, or no HITL permission)",
        404: "no such run or no approval task in it",
        409: "this approval was answered already",
    }.get(status, "refused")
    return f"Airflow: {meaning}: {detail} ({status} on {path})"


def answer_approval(
    api: AirflowApi, dag_id: str, run_id: str, option: str, comment: str, task_id: str = "approve"
) -> dict[str, Any]:
    """Answer a run's approval task with Approve or Reject and a comment; return Airflow's record."""
    path = (
        f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        f"/taskInstances/{quote(task_id, safe='')}/-1/hitlDetails"
    )
    waiting = api.call("GET", path)
    if waiting.get("response_received"):
        raise AirflowApiError(
            f"{dag_id} run {run_id}: answered already by {waiting.get('responded_by_user')}"
        )
    body = {"chosen_options": [option], "params_input": {"comment": comment}}
    return dict(api.call("PATCH", path, json=body))
