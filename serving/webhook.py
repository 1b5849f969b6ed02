"""MLflow's registry webhook: `POST /internal/registry-events` makes an alias move reach serving at once.

MLflow's tracking server signs each delivery (HMAC-SHA256 over `<delivery id>.<timestamp>.<body>`,
header `X-MLflow-Signature: v1,<base64>`) with the secret `mlops webhook` registered
(MLOPS_WEBHOOK_SECRET). The endpoint needs no API key: the signature is its authentication. A forged,
unsigned, stale (more than 5 minutes off) or replayed call gets 401 and changes nothing. A valid one
gets 200 at once and posts a notice per affected model in a folder every gunicorn worker shares
(SERVING_EVENTS_DIR, set up by gunicorn.conf.py): a webhook reaches one worker, and each worker's
notice thread sees the notice within ~0.2 s and reloads through ModelStore.refresh (golden records,
then the atomic swap). Polling every SERVING_RELOAD_SECONDS stays as the fallback for a lost event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tabular_mlops import registry, tracking
from tabular_mlops.config import ModelConfig
from tabular_mlops.webhooks import ENDPOINT_PATH

from serving.guard import request_id

log = logging.getLogger("serving")

EVENTS_DIR_ENV = "SERVING_EVENTS_DIR"
TOLERANCE_SECONDS = 300  # a delivery older (or further ahead) than this is refused as stale
NOTICE_POLL_SECONDS = 0.2
MAX_EVENT_BYTES = 64 * 1024  # MLflow's alias events are ~200 bytes
RELOAD_ALIASES = (registry.PRODUCTION, registry.CHALLENGER)  # `previous` serves nothing
SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER = (
    "x-mlflow-signature",
    "x-mlflow-timestamp",
    "x-mlflow-delivery-id",
)
# MLflow sends a UUID; anything else never reaches the file system (ids name files in the folder).
_DELIVERY_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


class Rejected(Exception):
    """A delivery that is not MLflow's, or not fresh: the reason goes to the log, the caller gets 401."""


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's `v1,<base64 HMAC-SHA256>` of `<delivery id>.<timestamp>.<body>`."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
    """The delivery id of a correctly signed, fresh delivery; Rejected otherwise."""
    delivery_id, timestamp = headers.get(DELIVERY_HEADER, ""), headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not (delivery_id and timestamp and given):
        raise Rejected("unsigned: a signature, timestamp or delivery id header is missing")
    if not _DELIVERY_ID.fullmatch(delivery_id) or not timestamp.isdigit():
        raise Rejected("malformed delivery id or timestamp")
    expected = signature(secret, delivery_id, timestamp, body).encode()
    # Standard Webhooks allows several space-separated signatures (a secret being rotated).
    if not any(hmac.compare_digest(candidate.encode(), expected) for candidate in given.split()):
        raise Rejected("the signature does not match the body")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > TOLERANCE_SECONDS:
        raise Rejected(f"stale: signed {age:.0f} s from now (tolerance {TOLERANCE_SECONDS} s)")
    return delivery_id


def events_dir() -> Path:
    """SERVING_EVENTS_DIR (gunicorn.conf.py sets one for all workers), else a private folder."""
    folder = os.environ.get(EVENTS_DIR_ENV)
    if not folder:  # one process (tests, uvicorn): nobody else to tell
        folder = os.environ[EVENTS_DIR_ENV] = tempfile.mkdtemp(prefix="serving-events-")
    path = Path(folder)
    (path / "deliveries").mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


class Deliveries:
    """Delivery ids seen lately, as files in the shared folder: a replay to any worker is refused."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "deliveries"

    def first_time(self, delivery_id: str, now: float | None = None) -> bool:
        """Record the id; False when some worker recorded it already (O_EXCL is atomic across them)."""
        self._forget_old(time.time() if now is None else now)
        try:
            os.close(os.open(self.folder / delivery_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        return True

    def _forget_old(self, now: float) -> None:
        # A timestamp may be up to the tolerance ahead, so an id stays refusable for twice as long.
        horizon = now - 2 * TOLERANCE_SECONDS
        for entry in os.scandir(self.folder):
            try:
                if entry.stat().st_mtime < horizon:
                    os.unlink(entry.path)
            except FileNotFoundError:  # another worker removed it first
                pass


class NoticeBoard:
    """One append-only file per model: a worker notices a reload request by the file's size growing."""

    def __init__(self, folder: Path, names: Iterable[str]) -> None:
        self.folder = folder
        self.names = list(names)
        self._stop = threading.Event()

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.reload"

    def post(self, names: Iterable[str], detail: str) -> None:
        """Ask every worker to reload these models (one short O_APPEND write each: atomic)."""
        line = (json.dumps({"at": time.time(), "detail": detail}) + "\n").encode()
        for name in names:
            fd = os.open(self._path(name), os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _stamps(self) -> dict[str, tuple[int, int] | None]:
        stamps: dict[str, tuple[int, int] | None] = {}
        for name in self.names:
            try:
                stat = os.stat(self._path(name))
                stamps[name] = (stat.st_ino, stat.st_size)
            except FileNotFoundError:
                stamps[name] = None
        return stamps

    def watch(self, reload: Callable[[list[str]], None], interval: float = NOTICE_POLL_SECONDS) -> None:
        """Call reload(names) from a daemon thread whenever their notices change (one stat per model)."""
        seen = self._stamps()  # notices posted before this worker started are already loaded

        def loop() -> None:
            nonlocal seen
            while not self._stop.wait(interval):
                now = self._stamps()
                changed = [name for name in self.names if now[name] != seen[name]]
                seen = now
                if changed:
                    try:
                        reload(changed)
                    except Exception:  # the thread must outlive one bad reload; polling retries too
                        log.exception("reload on a registry event failed: %s", changed)

        threading.Thread(target=loop, name="registry-events", daemon=True).start()

    def stop(self) -> None:
        """End the watch thread."""
        self._stop.set()


def affected(configs: Mapping[str, ModelConfig], event: Any) -> list[str]:
    """Model configs whose production or challenger alias the event moved (none for other events)."""
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict) or event.get("entity") != "model_version_alias":
        return []
    if data.get("alias") not in RELOAD_ALIASES:
        return []
    return [
        name
        for name, config in configs.items()
        if tracking.registered_name(config.model.registered_name) == data.get("name")
    ]


def _unauthorized(rid: str) -> JSONResponse:
    return JSONResponse(
        status_code=401,
        content={"detail": "not a valid MLflow webhook delivery", "request_id": rid},
        headers={"X-Request-ID": rid},
    )


def mount(app: FastAPI, configs: Mapping[str, ModelConfig], secret: str, board: NoticeBoard) -> None:
    """Add the signed webhook endpoint to the app."""
    deliveries = Deliveries(board.folder)

    @app.post(ENDPOINT_PATH, include_in_schema=False)
    async def registry_event(request: Request) -> JSONResponse:
        rid = request_id(request.scope)
        body = await request.body()
        try:
            if len(body) > MAX_EVENT_BYTES:
                raise Rejected(f"a {len(body)}-byte body is no registry event")
            delivery_id = verify(secret, request.headers, body)
            if not deliveries.first_time(delivery_id):
                raise Rejected(f"replayed delivery {delivery_id}")
        except Rejected as exc:
            log.warning("request_id=%s refused a registry webhook call: %s", rid, exc)
            return _unauthorized(rid)
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        names = affected(configs, event)
        if names:  # every worker reloads in its notice thread, this one included
            moved = f"{event['data'].get('name')}@{event['data'].get('alias')}"
            board.post(names, f"{delivery_id} {moved}")
            log.info("registry event %s: %s moved, reloading %s", delivery_id, moved, names)
        return JSONResponse(content={"delivery_id": delivery_id, "reload": names, "request_id": rid})
