"""Fixtures that start real services on loopback: an Airflow metadata DB and a moto S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_for_http

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite metadata DB in the session's private AIRFLOW_HOME."""
    result = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{endpoint}/moto-api/")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def aws_connection(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """aws_default pointing at the moto server, set the way deployments set it (AIRFLOW_CONN_*)."""
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


@pytest.fixture
def s3_client(aws_connection: str) -> Any:
    """A boto3 client on the moto server, for the test's own setup and checks."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=aws_connection,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """Bucket `lake` on the moto server, created on first use."""
    name = "lake"
    if name not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket=name)
    return name
