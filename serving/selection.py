"""SERVING_MODELS: which model configs one instance of the scoring service loads and serves.

Unset or empty, every config in the config folder. Otherwise comma-separated config names
(`SERVING_MODELS=churn` or `churn,credit_risk`): the instance loads, scores, describes and reports
readiness for those only, and answers 404 for the others, so a deployment can run one instance
per model and a load balancer can route each model to the instances that serve it. A name with no
config stops gunicorn's master before any worker starts, naming it and the valid names
(`serving/gunicorn.conf.py`). This module stays light (no numpy, no DuckDB): the master imports it.
"""

from __future__ import annotations

import os

from tabular_mlops.config import ModelConfig, load_model_configs

MODELS_ENV = "SERVING_MODELS"


class SelectionError(ValueError):
    """SERVING_MODELS names a model that has no config, or no model at all."""


def select(configs: dict[str, ModelConfig], value: str | None = None) -> dict[str, ModelConfig]:
    """The configs `value` (default: SERVING_MODELS) names, in config order; all of them when it is empty."""
    value = os.environ.get(MODELS_ENV, "") if value is None else value
    if not value.strip():
        return dict(configs)
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in configs]
    valid = ", ".join(configs) or "none"
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise SelectionError(f"{MODELS_ENV} names unknown model(s) {listed}; valid names: {valid}")
    if not names:
        raise SelectionError(f"{MODELS_ENV}={value!r} names no model; valid names: {valid}")
    return {name: config for name, config in configs.items() if name in names}


def serving_configs() -> dict[str, ModelConfig]:
    """The configs this instance serves: the config folder's, narrowed by SERVING_MODELS."""
    return select(load_model_configs())
