"""Serving limits before any work, against a real gunicorn on 127.0.0.1 with raw sockets.

The server has an empty registry (no model loaded): the key, the body limit and the schema caps
are all decided before scoring, and a valid record gets the 503 of a model with no production version.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tabular_mlops.config import ConfigError, load_model_config

from serving.guard import DEFAULT_MAX_BODY_BYTES, exposure_error, max_body_bytes, max_inflight_bytes
from tests.e2e.test_serving import _start, _telco_records
from tests.helpers import free_port, wait_until_ok

KEY = "guard-key-456"
LIMIT = 1_000_000
PLANNED = 100 * 1024 * 1024  # what the hostile client would upload: 100 MB
CHUNK = 64 * 1024
PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """gunicorn (2 workers) with a key, a 1 MB body limit and an empty registry; yields (port, log)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("guarded")
    log = root / "gunicorn.log"
    port = free_port()
    registry = f"sqlite:///{root / 'empty.db'}"
    # Created here, once: two workers creating its tables at the same moment find it "unreachable".
    MlflowClient(tracking_uri=registry, registry_uri=registry).search_registered_models()
    env = {
        "SERVING_API_KEY": KEY,
        "SERVING_MAX_BODY_BYTES": str(LIMIT),
        "SERVING_RELOAD_SECONDS": "3600",
        "MLFLOW_TRACKING_URI": registry,
    }
    with log.open("w") as stderr:
        process = _start(port, env, stderr=stderr)
        try:
            wait_until_ok(f"http://127.0.0.1:{port}/health", process, timeout=120)
            yield port, log
        finally:
            process.terminate()
            process.wait(timeout=30)


def _upload(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[int, bytes, int]:
    """Send head, then chunks until the server answers or stops reading; (status, answer, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sent = 0
    try:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0.02)[0]:
                break  # the answer is there: stop sending, as a well-behaved client does
            sock.settimeout(2)  # the server stopped reading: its answer must be on its way
            try:
                sock.sendall(chunk)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(10)
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break  # the server closed the connection after its answer
            answer += data
    finally:
        sock.close()
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match, f"no HTTP answer after {sent} body bytes: {answer[:200]!r}"
    return int(match.group(1)), answer, sent


def _zeros(total: int) -> Iterator[bytes]:
    for _ in range(total // CHUNK):
        yield b"0" * CHUNK


def _chunked(total: int) -> Iterator[bytes]:
    for piece in _zeros(total):
        yield b"%x\r\n%s\r\n" % (len(piece), piece)


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _json_body(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_keyless_upload_gets_401_before_its_body_is_read(guarded: tuple[int, Path]) -> None:
    port, _ = guarded
    head = _head("/v1/models/churn/predict", {"Content-Length": str(PLANNED)})
    status, answer, sent = _upload(port, head, _zeros(PLANNED))
    assert status == 401 and sent < PLANNED // 20, (status, sent)
    assert b"connection: close" in answer.lower() and b"www-authenticate: bearer" in answer.lower()
    wrong = _head("/v1/models/churn/predict", {"Content-Length": str(PLANNED), "Authorization": "Bearer no"})
    assert _upload(port, wrong, _zeros(PLANNED))[0] == 401


def test_a_declared_oversized_body_gets_413_at_once(guarded: tuple[int, Path]) -> None:
    port, _ = guarded
    head = _head(
        "/v1/models/churn/predict", {"Content-Length": str(PLANNED), "Authorization": f"Bearer {KEY}"}
    )
    status, answer, sent = _upload(port, head, _zeros(PLANNED))
    assert status == 413 and sent < PLANNED // 20, (status, sent)
    assert "SERVING_MAX_BODY_BYTES" in _json_body(answer)["detail"]
    bad = _head("/v1/models/churn/predict", {"Content-Length": "lots", "Authorization": f"Bearer {KEY}"})
    assert _upload(port, bad, iter([]))[0] == 400  # rejected by the HTTP parser or the guard


def test_a_chunked_stream_is_cut_off_with_413_once_past_the_limit(guarded: tuple[int, Path]) -> None:
    port, _ = guarded
    head = _head(
        "/v1/models/churn/predict", {"Transfer-Encoding": "chunked", "Authorization": f"Bearer {KEY}"}
    )
    status, answer, sent = _upload(port, head, _chunked(PLANNED))
    # Counted as it streamed: more than the limit went out (no Content-Length to judge by),
    # and the answer came while most of the 100 MB was still unsent.
    assert status == 413 and LIMIT < sent < PLANNED // 10, (status, sent)
    assert _json_body(answer)["request_id"]


def test_bodies_in_flight_past_the_worker_budget_get_503_and_the_budget_is_released() -> None:
    port = free_port()
    env = {"SERVING_API_KEY": KEY, "SERVING_MAX_BODY_BYTES": str(LIMIT), "SERVING_WORKERS": "1"}
    process = _start(port, {**env, "SERVING_MAX_INFLIGHT_BYTES": str(LIMIT * 3 // 2)})
    head = _head(
        "/v1/models/churn/predict", {"Transfer-Encoding": "chunked", "Authorization": f"Bearer {KEY}"}
    )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/health", process, timeout=120)
        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        first.sendall(head + b"".join(_chunked(13 * CHUNK)))  # 832 kB, within the limit, kept open
        time.sleep(1)  # the worker has read it: those bytes are in flight
        status, answer, sent = _upload(port, head, _chunked(PLANNED))
        assert status == 503 and sent < LIMIT, (status, sent)
        assert (
            "SERVING_MAX_INFLIGHT_BYTES" in _json_body(answer)["detail"]
            and b"retry-after: 1" in answer.lower()
        )
        first.sendall(b"0\r\n\r\n")  # the first body ends: not JSON, so the schema answers
        assert first.recv(100).startswith(b"HTTP/1.1 422 ")
        first.close()
        again = _head(
            "/v1/models/churn/predict", {"Content-Length": str(13 * CHUNK), "Authorization": f"Bearer {KEY}"}
        )
        assert _upload(port, again, _zeros(13 * CHUNK))[0] == 422  # released: read and parsed again
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_real_client_streaming_a_huge_body_reads_the_401(guarded: tuple[int, Path]) -> None:
    port, _ = guarded
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/models/churn/predict", content=_zeros(PLANNED), timeout=30
    )
    assert response.status_code == 401 and response.json()["detail"] == "missing or wrong API key"


def test_open_routes_stay_open_and_model_routes_need_the_key(guarded: tuple[int, Path]) -> None:
    url = f"http://127.0.0.1:{guarded[0]}"
    for path in ("/health", "/ready", "/ready/churn", "/metrics"):
        assert httpx.get(f"{url}{path}").status_code in (200, 503), path  # ready: 503, nothing loaded
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_history_over_its_cap_gets_422_naming_table_and_cap(guarded: tuple[int, Path]) -> None:
    url = f"http://127.0.0.1:{guarded[0]}/v1/models/credit_risk/predict"
    body = {"application": {"SK_ID_CURR": 1}, "bureau": [{}] * 201, "previous_application": [{}] * 3}
    response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 422
    capped = [e for e in response.json()["detail"] if e["type"] == "too_long"]
    assert [e["field"].rsplit(".", 1)[-1] for e in capped] == ["bureau"], capped
    assert "at most 200 items" in capped[0]["message"]


def test_errors_name_no_internals_and_the_log_keeps_them_under_the_request_id(
    guarded: tuple[int, Path], telco_raw: Path
) -> None:
    port, log = guarded
    record = _telco_records(telco_raw, 1)[0]
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/models/churn/predict",
        json=record,
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "req-guard-1"},
    )
    assert response.status_code == 503 and response.headers["x-request-id"] == "req-guard-1"
    # No production version: said as it is (it names no internals); any other reason a model cannot
    # serve gets a stable message, and the log line under the request id has it (test_serving).
    assert response.json()["detail"] == "no production version of churn-classifier yet"
    logged = [line for line in log.read_text().splitlines() if "request_id=req-guard-1" in line]
    assert logged and "no production version of churn-classifier yet" in logged[0]
    odd = httpx.post(
        f"http://127.0.0.1:{port}/v1/models/churn/predict",
        json=record,
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "x" * 200},
    )
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])  # not a log-line injection vector


def test_an_open_service_beyond_loopback_or_a_bad_limit_refuses_to_start() -> None:
    port = free_port()
    env = {"SERVING_API_KEY": "", "HOST": "0.0.0.0", "SERVING_WORKERS": "1"}  # noqa: S104 - refused before bind
    process = _start(port, env)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "refusing to start" in err and "SERVING_API_KEY" in err
    process = _start(free_port(), {"SERVING_MAX_BODY_BYTES": "64MB", "SERVING_WORKERS": "1"})
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "SERVING_MAX_BODY_BYTES must be a whole number" in err
    assert "Traceback" not in err


def test_exposure_rules_and_body_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVING_API_KEY", raising=False)
    monkeypatch.delenv("SERVING_ALLOW_ANONYMOUS", raising=False)
    assert exposure_error([("127.0.0.1", 8000), ("::1", 8000), ("localhost", 1), "/run/s.sock"]) is None
    assert "0.0.0.0:8000" in (exposure_error([("0.0.0.0", 8000)]) or "")  # noqa: S104
    assert exposure_error([("serving.example.com", 80)])  # a name may resolve anywhere
    monkeypatch.setenv("SERVING_ALLOW_ANONYMOUS", "1")
    assert exposure_error([("0.0.0.0", 8000)]) is None  # noqa: S104 - the documented opt-out
    monkeypatch.delenv("SERVING_ALLOW_ANONYMOUS")
    monkeypatch.setenv("SERVING_API_KEY", "k")
    assert exposure_error([("0.0.0.0", 8000)]) is None  # noqa: S104
    monkeypatch.delenv("SERVING_MAX_BODY_BYTES", raising=False)
    assert max_body_bytes() == DEFAULT_MAX_BODY_BYTES
    assert max_inflight_bytes() == 2 * DEFAULT_MAX_BODY_BYTES
    for bad in ("64MB", "0"):
        monkeypatch.setenv("SERVING_MAX_BODY_BYTES", bad)
        with pytest.raises(ValueError, match="SERVING_MAX_BODY_BYTES"):
            max_body_bytes()


def test_a_history_cap_on_an_unknown_table_is_a_config_error(tmp_path: Path) -> None:
    configs = PROJECT_DIR / "include" / "configs"
    text = (configs / "credit_risk.yaml").read_text().replace("    bureau: 200\n", "    bureaux: 200\n")
    (tmp_path / "credit_risk.yaml").write_text(text)
    (tmp_path / "defaults.yaml").write_text((configs / "defaults.yaml").read_text())
    with pytest.raises(ConfigError, match=r"serving\.max_history_rows: bureaux not in data\.tables"):
        load_model_config(tmp_path / "credit_risk.yaml")
