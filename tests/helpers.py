"""Helpers shared by test modules: running the installed CLI and waiting for loopback servers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def run_mlops(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the installed mlops command as a user would and return the finished process."""
    return subprocess.run(
        [str(BIN / "mlops"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON summary the CLI prints as its last stdout line."""
    return json.loads(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    """Poll url until it answers (any HTTP status) or raise after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - loopback test server
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.2)


def wait_until_ok(url: str, process: subprocess.Popen | None = None, timeout: float = 180) -> None:
    """Poll url until it answers 200; fail at once when the server's process has died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback server
                if response.status == 200:
                    return
                last = f"{response.status}"
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s (last: {last})")


class Inbox:
    """aiosmtpd handler keeping every message it receives (a real SMTP server's mailbox)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def asset_events(name: str, source_run_id: str) -> list[Any]:
    """The Airflow Asset events of the Asset `name` that the DAG run `source_run_id` emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == name, AssetEvent.source_run_id == source_run_id)
            .all()
        )
        session.expunge_all()
        return list(events)


def fit_feature_classifier(frame: Any, y: Any, spec: Any, scale: bool, train_rows: int) -> tuple[Any, int]:
    """A feature-row TabularClassifier fitted as training fits one; (classifier, best iteration).

    The rows after `train_rows` are the early-stopping validation split.
    """
    from tabular_mlops.modeling import (
        TabularClassifier,
        build_estimator,
        build_preprocessor,
        fit_estimator,
        split_columns,
    )

    categorical, numeric = split_columns(frame, exclude=set())
    preprocessor = build_preprocessor(categorical, numeric, scale)
    train, valid = slice(0, train_rows), slice(train_rows, None)
    x_train = preprocessor.fit_transform(frame.iloc[train])
    estimator = build_estimator(spec, 1.0, 0)
    x_valid = preprocessor.transform(frame.iloc[valid])
    best = fit_estimator(spec, estimator, x_train, y[train], x_valid, y[valid])
    columns = categorical + numeric
    return TabularClassifier("t", "features", "t", "id", None, columns, preprocessor, estimator), best
