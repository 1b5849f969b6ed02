"""SERVING_MODELS: which configs an instance serves, and a name with no config refused at start."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil
import pytest
from tabular_mlops.config import load_model_configs

from serving.selection import SelectionError, select
from tests.e2e.test_serving import _start
from tests.helpers import free_port

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "configs"


def test_the_selection_keeps_config_order_and_defaults_to_every_config() -> None:
    configs = load_model_configs(CONFIGS)
    assert list(select(configs, "")) == list(select(configs, "  ")) == list(configs)
    assert list(select(configs, "churn")) == ["churn"]
    assert list(select(configs, " credit_risk , churn,churn ")) == ["churn", "credit_risk"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("churn,fraud,chrun", "names unknown model(s) 'fraud', 'chrun'; valid names: churn, credit_risk"),
        (" , ", "SERVING_MODELS=' , ' names no model; valid names: churn, credit_risk"),
    ],
)
def test_a_selection_naming_no_config_is_refused_with_the_valid_names(value: str, message: str) -> None:
    with pytest.raises(SelectionError) as caught:
        select(load_model_configs(CONFIGS), value)
    assert message in str(caught.value)


def test_an_unknown_name_stops_gunicorn_before_any_worker_with_one_clear_line() -> None:
    process = _start(free_port(), {"SERVING_MODELS": "churn,fraud", "SERVING_WORKERS": "1"})
    try:
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # it did not stop (communicate timed out): not left running
            workers: list[psutil.Process] = []
            with contextlib.suppress(psutil.NoSuchProcess):
                workers = psutil.Process(process.pid).children(recursive=True)
            process.kill()
            process.communicate()
            for worker in workers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker.kill()
            psutil.wait_procs(workers, timeout=10)
    assert process.returncode == 1, err[-3000:]
    assert "SERVING_MODELS names unknown model(s) 'fraud'; valid names: " in err
    assert "churn" in err.split("valid names: ")[1] and "Traceback" not in err
