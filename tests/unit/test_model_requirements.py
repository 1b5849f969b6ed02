"""The pip pins logged with a model: exact installed versions, and a clear error for a missing library."""

from __future__ import annotations

import importlib.metadata

import pytest
from tabular_mlops.config import get_model_config
from tabular_mlops.training import model_requirements


@pytest.mark.parametrize(("model", "booster"), [("churn", "lightgbm"), ("credit_risk", "xgboost")])
def test_pins_are_the_installed_versions_of_the_configured_booster(model: str, booster: str) -> None:
    pins = dict(line.split("==") for line in model_requirements(get_model_config(model)))
    assert pins[booster] == importlib.metadata.version(booster)
    assert pins["mlflow"] == importlib.metadata.version("mlflow")
    assert ({"lightgbm", "xgboost"} - {booster}).isdisjoint(pins)


def test_a_missing_library_is_an_error_not_a_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def without_lightgbm(name: str) -> str:
        if name == "lightgbm":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", without_lightgbm)
    with pytest.raises(RuntimeError, match="needs 'lightgbm'.*not installed"):
        model_requirements(get_model_config("churn"))
