"""The limits every request meets before the app sees it: the API key, then the body size.

A pure ASGI middleware: it answers from the headers alone, and counts a streamed body as it
arrives, so a hostile upload is refused without being buffered or decoded (FastAPI reads and
parses the whole body before any dependency runs; an 80 MB JSON body grew a worker by 1 GB).
"""

from __future__ import annotations

import gc
import hmac
import ipaddress
import json
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Fits SERVING_MAX_RECORDS (1000) credit_risk applicants with their whole history: measured
# 39 MB of JSON for 1,000 generated applicants (p99 applicant 121 kB), so 64 MiB leaves room.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# Routes that need the key; health, readiness, metrics and the API docs stay open, and MLflow's
# webhook (/internal/registry-events) carries its own authentication, an HMAC signature (serving.webhook).
PROTECTED_PREFIX = "/v1/"
_BUSY = "too many request bodies in flight in this worker (SERVING_MAX_INFLIGHT_BYTES); retry"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def warn_if_open() -> None:
    """Say loudly, at start, that without SERVING_API_KEY anyone who reaches the port may score."""
    if not os.environ.get("SERVING_API_KEY"):
        log.warning(
            "SERVING_API_KEY is not set: the scoring and model routes are OPEN to anyone who can reach "
            "this port; set SERVING_API_KEY before exposing the service"
        )


def _loopback(address: object) -> bool:
    if isinstance(address, str | bytes):  # a unix socket: only local processes reach it
        return True
    host = str(address[0]).strip("[]") if isinstance(address, tuple) else str(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def exposure_error(addresses: list[Any]) -> str | None:
    """Why the service must not start: bound beyond loopback with no key and no explicit opt-out."""
    if os.environ.get("SERVING_API_KEY") or os.environ.get("SERVING_ALLOW_ANONYMOUS") == "1":
        return None
    exposed = [a for a in addresses if not _loopback(a)]
    if not exposed:
        return None
    shown = ", ".join(":".join(str(p) for p in a) if isinstance(a, tuple) else str(a) for a in exposed)
    return (
        f"refusing to start: bound to {shown} (beyond loopback) without SERVING_API_KEY; set the key, "
        "bind HOST=127.0.0.1, or set SERVING_ALLOW_ANONYMOUS=1 to serve an open API on purpose"
    )


def _bytes_setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of bytes, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def max_body_bytes() -> int:
    """SERVING_MAX_BODY_BYTES: the largest request body accepted (default 64 MiB)."""
    return _bytes_setting("SERVING_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)


def max_inflight_bytes() -> int:
    """SERVING_MAX_INFLIGHT_BYTES: body bytes a worker holds at once, all requests (default 2x the limit)."""
    return _bytes_setting("SERVING_MAX_INFLIGHT_BYTES", 2 * max_body_bytes())


def request_id(scope: Scope) -> str:
    """The caller's X-Request-ID, or a new one (kept in the scope so the app answers with the same)."""
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        given = (_header(scope, b"x-request-id") or b"").decode("latin-1")
        # Only a plain token is kept: the id goes into log lines and response headers.
        state["request_id"] = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    return str(state["request_id"])


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def key_ok(scope: Scope) -> bool:
    """True without a configured SERVING_API_KEY, or when the bearer token matches (constant time)."""
    expected = os.environ.get("SERVING_API_KEY")
    if not expected:
        return True
    given = _header(scope, b"authorization") or b""
    return hmac.compare_digest(given, f"Bearer {expected}".encode())


async def reply(
    send: Send, scope: Scope, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """A JSON error that closes the connection (the unread rest of the body is never received)."""
    rid = request_id(scope)
    body = json.dumps({"detail": detail, "request_id": rid}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", rid.encode("latin-1")),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """401 without the key on /v1/ routes, 413 above the body limit, 503 past the worker's budget of
    body bytes in flight: each decided before the body is read, or while it streams."""

    def __init__(self, app: ASGIApp, limit: int | None = None, budget: int | None = None) -> None:
        self.app = app
        self.limit = limit if limit is not None else max_body_bytes()
        # Body bytes of the requests in flight in this worker (one event loop: no lock needed).
        # Each body within the limit is fine, but many at once would add up: past the budget, 503.
        self.budget = budget if budget is not None else max_inflight_bytes()
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(PROTECTED_PREFIX) and not key_ok(scope):
            await reply(send, scope, 401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await reply(send, scope, 400, "Content-Length must be a whole number of bytes")
                return
            if int(declared) > self.limit:
                await reply(send, scope, 413, self._too_large())
                return
            if self.inflight + int(declared) > self.budget:
                await reply(send, scope, 503, _BUSY, {"Retry-After": "1"})
                return
        await self._counted(scope, receive, send)

    def _too_large(self) -> str:
        return f"request body larger than {self.limit} bytes (SERVING_MAX_BODY_BYTES)"

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a receive that cuts a streamed body off with 413 once it passes the limit."""
        seen = 0
        started = refused = False

        async def counted_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] != "http.request" or refused:
                return message
            size = len(message.get("body", b""))
            seen += size
            self.inflight += size
            if seen <= self.limit and self.inflight <= self.budget:
                return message
            refused = True
            if not started:
                if seen > self.limit:
                    await reply(send, scope, 413, self._too_large())
                else:
                    await reply(send, scope, 503, _BUSY, {"Retry-After": "1"})
            # To the app the client has gone away: it stops reading and its answer is dropped.
            return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        finally:
            self.inflight -= seen  # the app is done with the body
            if refused:
                # The app's aborted read leaves the chunks in an exception-traceback cycle: free them
                # now, not at some later collection, so the budget bounds memory (young objects only).
                gc.collect(1)
