"""The registry webhook's checks: MLflow's own signer against serving's verifier, replay and staleness,
the endpoint in the real app (401 changes nothing, 200 posts a notice), and the workers' notice board."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow.webhooks.delivery import _generate_hmac_signature
from tabular_mlops.config import load_model_configs
from tabular_mlops.webhooks import ENDPOINT_PATH, WebhookError, webhook_secret

from serving.webhook import Deliveries, NoticeBoard, Rejected, affected, signature, verify

SECRET = "webhook-secret-for-tests-0123456789"
EVENT = {
    "entity": "model_version_alias",
    "action": "created",
    "timestamp": "2026-12-02T18:00:00+00:00",
    "data": {"name": "churn-classifier", "alias": "production", "version": "7"},
}


def _delivery(event: dict[str, Any] = EVENT, secret: str = SECRET, age: float = 0) -> tuple[dict, bytes]:
    """Headers and body exactly as MLflow's delivery builds them (its own signing function)."""
    body = json.dumps(event)
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time() - age))
    headers = {
        "content-type": "application/json",
        "x-mlflow-delivery-id": delivery_id,
        "x-mlflow-timestamp": timestamp,
        "x-mlflow-signature": _generate_hmac_signature(secret, delivery_id, timestamp, body),
    }
    return headers, body.encode()


def test_a_delivery_signed_by_mlflow_verifies() -> None:
    headers, body = _delivery()
    assert verify(SECRET, headers, body) == headers["x-mlflow-delivery-id"]
    assert (
        signature(SECRET, headers["x-mlflow-delivery-id"], headers["x-mlflow-timestamp"], body)
        == (headers["x-mlflow-signature"])
    )


def test_forged_signatures_are_rejected() -> None:
    headers, body = _delivery(secret="someone-elses-secret-0123456789")
    with pytest.raises(Rejected, match="does not match"):
        verify(SECRET, headers, body)
    headers, body = _delivery()
    moved = body.replace(b'"version": "7"', b'"version": "8"')
    with pytest.raises(Rejected, match="does not match"):
        verify(SECRET, headers, moved)
    with pytest.raises(Rejected, match="does not match"):  # a different delivery id, same signature
        verify(SECRET, {**headers, "x-mlflow-delivery-id": str(uuid.uuid4())}, body)


def test_unsigned_and_malformed_deliveries_are_rejected() -> None:
    headers, body = _delivery()
    for missing in ("x-mlflow-signature", "x-mlflow-timestamp", "x-mlflow-delivery-id"):
        with pytest.raises(Rejected, match="unsigned"):
            verify(SECRET, {k: v for k, v in headers.items() if k != missing}, body)
    with pytest.raises(Rejected, match="malformed"):
        verify(SECRET, {**headers, "x-mlflow-delivery-id": "../../etc/passwd"}, body)
    with pytest.raises(Rejected, match="malformed"):
        verify(SECRET, {**headers, "x-mlflow-timestamp": "-5"}, body)


def test_stale_deliveries_are_rejected_even_when_signed() -> None:
    headers, body = _delivery(age=301)
    with pytest.raises(Rejected, match="stale"):
        verify(SECRET, headers, body)
    headers, body = _delivery(age=-301)  # far ahead of this clock
    with pytest.raises(Rejected, match="stale"):
        verify(SECRET, headers, body)
    headers, body = _delivery(age=290)
    assert verify(SECRET, headers, body)


def test_a_replayed_delivery_id_is_refused_by_every_worker(tmp_path: Path) -> None:
    (tmp_path / "deliveries").mkdir()
    worker_a, worker_b = Deliveries(tmp_path), Deliveries(tmp_path)
    assert worker_a.first_time("id-1")
    assert not worker_b.first_time("id-1") and not worker_a.first_time("id-1")
    assert worker_b.first_time("id-2")
    # Ids older than twice the tolerance are forgotten (their timestamps are stale by then anyway).
    assert worker_a.first_time("id-3", now=time.time() + 601)
    assert sorted(p.name for p in (tmp_path / "deliveries").iterdir()) == ["id-3"]


def test_only_production_and_challenger_moves_of_a_configured_model_reload() -> None:
    configs = load_model_configs()
    assert affected(configs, EVENT) == ["churn"]
    challenger = {**EVENT, "data": {"name": "credit-risk-classifier", "alias": "challenger"}}
    assert affected(configs, {**challenger, "action": "deleted"}) == ["credit_risk"]
    assert affected(configs, {**EVENT, "data": {**EVENT["data"], "alias": "previous"}}) == []
    assert affected(configs, {**EVENT, "data": {**EVENT["data"], "name": "example_model"}}) == []
    assert affected(configs, {**EVENT, "entity": "model_version_tag"}) == []
    assert affected(configs, {"data": "nonsense"}) == []


def test_the_secret_must_be_long_enough() -> None:
    assert webhook_secret({}) is None
    assert webhook_secret({"MLOPS_WEBHOOK_SECRET": SECRET}) == SECRET
    with pytest.raises(WebhookError, match="MLOPS_WEBHOOK_SECRET is shorter than 16"):
        webhook_secret({"MLOPS_WEBHOOK_SECRET": "short"})


def test_notices_reach_another_workers_board(tmp_path: Path) -> None:
    sender, receiver = NoticeBoard(tmp_path, ["churn", "credit_risk"]), NoticeBoard(tmp_path, ["churn"])
    sender.post(["churn"], "before the worker started")  # already loaded: no reload
    got: list[list[str]] = []
    seen = threading.Event()
    receiver.watch(lambda names: (got.append(names), seen.set()), interval=0.05)
    try:
        sender.post(["credit_risk"], "not this worker's model")
        sender.post(["churn"], "moved")
        assert seen.wait(10)
        time.sleep(0.3)
    finally:
        receiver.stop()
    assert got == [["churn"]]


@pytest.fixture
def app_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real app over an empty registry, the webhook secret set, notices in a private folder."""
    from serving.app import create_app
    from serving.models import ModelStore

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("MLOPS_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SERVING_EVENTS_DIR", str(tmp_path / "events"))
    monkeypatch.setenv("SERVING_API_KEY", "a-key-the-webhook-never-sends")
    with TestClient(create_app(ModelStore(load_model_configs()), watch=False)) as client:
        yield client, tmp_path / "events"


def test_the_endpoint_refuses_forged_unsigned_and_replayed_calls_and_posts_nothing(app_client: Any) -> None:
    client, events = app_client
    forged_headers, body = _delivery(secret="not-the-secret-0123456789abc")
    assert client.post(ENDPOINT_PATH, content=body, headers=forged_headers).status_code == 401
    assert client.post(
        ENDPOINT_PATH, content=body, headers={"content-type": "application/json"}
    ).status_code == (401)
    stale_headers, stale = _delivery(age=600)
    assert client.post(ENDPOINT_PATH, content=stale, headers=stale_headers).status_code == 401
    assert list(events.glob("*.reload")) == []

    headers, body = _delivery()
    accepted = client.post(ENDPOINT_PATH, content=body, headers=headers)  # no API key: the HMAC is the auth
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["reload"] == ["churn"]
    notice = (events / "churn.reload").read_text()
    assert headers["x-mlflow-delivery-id"] in notice
    replayed = client.post(ENDPOINT_PATH, content=body, headers=headers)
    assert replayed.status_code == 401
    assert (events / "churn.reload").read_text() == notice  # the replay posted nothing


def test_mlops_webhook_names_a_missing_secret_and_a_bad_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tabular_mlops.cli import main

    monkeypatch.delenv("MLOPS_WEBHOOK_SECRET", raising=False)
    assert main(["webhook", "--url", "http://serving:8000/internal/registry-events"]) == 1
    assert "mlops webhook: error: MLOPS_WEBHOOK_SECRET is not set" in capsys.readouterr().err
    monkeypatch.setenv("MLOPS_WEBHOOK_SECRET", SECRET)
    assert main(["webhook", "--url", "serving:8000/internal"]) == 1
    assert "--url must be an http(s) URL with a host, got 'serving:8000/internal'" in capsys.readouterr().err
