"""`mlops approve` / `mlops reject` refusals that need no Airflow: each is one line naming what to do."""

from __future__ import annotations

import pytest
from tabular_mlops import cli

from tests.helpers import free_port


def test_approve_without_credentials_says_which_variables_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("AIRFLOW_API_TOKEN", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    code = cli.main(["approve", "--model", "credit_risk", "--run", "manual__1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "mlops approve: error: set AIRFLOW_API_TOKEN, or AIRFLOW_USERNAME and AIRFLOW_PASSWORD" in err
    assert "Traceback" not in err


def test_reject_against_an_airflow_nobody_runs_names_the_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_API_URL", url)
    monkeypatch.setenv("AIRFLOW_API_TOKEN", "t")
    code = cli.main(["reject", "--model", "credit_risk", "--run", "manual__1", "--comment", "no"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"mlops reject: error: Airflow at {url} did not answer" in err and "AIRFLOW_API_URL" in err


def test_promote_takes_a_version_or_the_challenger_never_both(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["promote", "--model", "churn", "--version", "3", "--from", "challenger"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
