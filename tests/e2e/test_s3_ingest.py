"""Raw data on S3: generate into and validate from a real S3 API (moto's server on loopback).

The bundle reaches S3 only through the Airflow amazon provider and the `aws_default` connection,
given here as AIRFLOW_CONN_AWS_DEFAULT exactly as a deployment would.
"""

from __future__ import annotations

from tests.helpers import last_json, run_mlops


def test_generate_to_s3_then_validate_from_s3(bucket: str, workspace) -> None:
    location = f"s3://{bucket}/raw/telco"
    generated = run_mlops(
        "generate", "--dataset", "telco", "--out", location, "--rows", "800", "--dirty-rows", "2"
    )
    assert generated.returncode == 0, generated.stderr
    assert "uploaded 1 file(s) to s3://lake/raw/telco" in generated.stderr

    validated = run_mlops("validate", "--model", "churn", "--data", location, "--run-id", "s3")
    assert validated.returncode == 0, validated.stderr
    summary = last_json(validated)
    assert summary["tables"]["customers"] == {
        "read": 800,
        "quarantined": 2,
        "written": 798,
        "blank_to_null": summary["tables"]["customers"]["blank_to_null"],
    }
    assert (workspace / "data" / "interim" / "churn" / "s3" / "customers.parquet").is_file()


def test_empty_s3_prefix_names_the_missing_file(bucket: str, workspace) -> None:
    result = run_mlops(
        "validate", "--model", "churn", "--data", f"s3://{bucket}/raw/nothing-here", "--run-id", "e"
    )
    assert result.returncode == 1
    assert "WA_Fn-UseC_-Telco-Customer-Churn.csv not found" in result.stderr


def test_unknown_bucket_is_a_clear_error(aws_connection: str, workspace) -> None:
    result = run_mlops("validate", "--model", "churn", "--data", "s3://no-such-bucket/raw", "--run-id", "b")
    assert result.returncode == 1
    assert "no-such-bucket" in result.stderr
    assert "Traceback" not in result.stderr
