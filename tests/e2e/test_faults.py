"""Transient or permanent, told apart on errors real clients raise against real (or absent) servers."""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tabular_mlops.faults import is_transient, retry_transient

from tests.helpers import free_port


def _raised(call: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_an_mlflow_server_that_is_not_there_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    error = _raised(lambda: client.get_registered_model("churn"))
    assert isinstance(error, MlflowException)
    assert is_transient(error)


def test_a_missing_model_in_a_real_registry_is_permanent(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    error = _raised(lambda: client.get_registered_model("no-such-model"))
    assert not is_transient(error)


def test_s3_unreachable_is_transient_and_a_missing_key_is_not(s3_client: Any, bucket: str) -> None:
    from botocore.config import Config

    absent = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    assert is_transient(_raised(lambda: absent.list_objects_v2(Bucket=bucket)))
    assert not is_transient(_raised(lambda: s3_client.get_object(Bucket=bucket, Key="absent.json")))


def test_smtp_refused_connection_is_transient_and_a_5xx_is_not() -> None:
    assert is_transient(_raised(lambda: smtplib.SMTP("127.0.0.1", free_port(), timeout=2)))
    assert not is_transient(smtplib.SMTPRecipientsRefused({"x@y": (550, b"no such user")}))
    assert not is_transient(smtplib.SMTPDataError(554, b"rejected"))
    assert is_transient(smtplib.SMTPDataError(451, b"try again later"))


def test_a_wrapped_cause_counts_and_plain_errors_do_not() -> None:
    try:
        try:
            raise ConnectionResetError("reset by peer")
        except ConnectionResetError as exc:
            raise RuntimeError("version 3 does not load") from exc
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(ValueError("bad column"))


def test_retry_backs_off_on_transient_and_stops_at_permanent() -> None:
    waits: list[float] = []
    calls = iter([ConnectionRefusedError("down"), ConnectionRefusedError("down"), "ok"])

    def flaky() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retry_transient(flaky, "registry read", sleep=waits.append) == "ok"
    assert waits == [1.0, 2.0]

    waits.clear()
    with pytest.raises(ValueError):
        retry_transient(lambda: (_ for _ in ()).throw(ValueError("bad")), "x", sleep=waits.append)
    assert waits == []
    with pytest.raises(ConnectionRefusedError):
        retry_transient(
            lambda: (_ for _ in ()).throw(ConnectionRefusedError("down")), "x", attempts=3, sleep=waits.append
        )
    assert waits == [1.0, 2.0]
