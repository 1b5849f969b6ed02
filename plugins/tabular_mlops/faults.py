"""Transient or permanent: which failures a retry can fix.

A registry, object store or mail server that is down for a moment raises an error a retry fixes;
bad data or a bad model raises one it never will. Stages use `is_transient` to keep the two apart:
a transient error is re-raised so Airflow retries the task with exponential back-off (see
dag_defaults), the CLI retries in process with `retry_transient`; only the data or the model may
refuse a candidate or fail a window for good.
"""

from __future__ import annotations

import logging
import smtplib
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("tabular_mlops.faults")

# HTTP statuses a server uses for "try again": timeout, too many requests, its own faults.
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_S3_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (`raise ... from`, then implicit context), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _mlflow_transient(exc: BaseException) -> bool | None:
    """MLflow: server faults and lost connections are transient; 4xx answers are not."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is in the lock
        return None
    if not isinstance(exc, MlflowException):
        return None
    # A failed HTTP call (refused, reset, retries exhausted) arrives as a bare MlflowException
    # with the default INTERNAL_ERROR code; the message is the only trace of the connection.
    text = str(exc)
    if "API request to" in text and ("failed with" in text or "Max retries" in text):
        return True
    return exc.get_http_status_code() in _RETRY_STATUSES


def _aws_transient(exc: BaseException) -> bool | None:
    """botocore: connection and timeout errors, throttling and 5xx answers are transient."""
    try:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - boto3 is in the lock
        return None
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return error.get("Code") in _S3_RETRY_CODES or status in _RETRY_STATUSES
    return None


def _basic_transient(exc: BaseException) -> bool | None:
    """Sockets, HTTP clients, SMTP and a locked SQLite store."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500  # 4xx: "try again later"; 5xx: refused for good
    if isinstance(exc, ConnectionError | TimeoutError | smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    try:
        import requests
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    return None


def is_transient(exc: BaseException) -> bool:
    """True when a retry may succeed: the first classifier with an opinion, along the cause chain."""
    for link in _chain(exc):
        for classify in (_mlflow_transient, _aws_transient, _basic_transient):
            verdict = classify(link)
            if verdict is not None:
                return verdict
    return False


def describe(exc: BaseException) -> str:
    """`Type: message`, short enough for a tag, a log line or an email."""
    return f"{type(exc).__name__}: {exc}"[:500]


def retry_transient(
    call: Callable[[], T],
    what: str,
    attempts: int = 4,
    first_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, retried with exponential back-off (1, 2, 4 s...) while it fails transiently.

    A permanent error, or the last transient one, propagates unchanged.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = first_delay * 2 ** (attempt - 1)
            log.warning(
                "%s failed (%s); retry %d of %d in %.0f s", what, describe(exc), attempt, attempts - 1, delay
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
