"""The Airflow Assets the DAGs exchange: retrain requests, promoted models, published predictions."""

from __future__ import annotations

from airflow.sdk import Asset


def retrain_asset(model: str) -> Asset:
    """The Asset the monitoring DAG emits to ask for a retrain of `model`."""
    return Asset(name=f"retrain/{model}", uri=f"mlops://retrain/{model}")


def model_asset(model: str) -> Asset:
    """The Asset updated whenever a new version of `model` goes to production."""
    return Asset(name=f"model/{model}", uri=f"mlops://model/{model}")


def predictions_asset(model: str) -> Asset:
    """The Asset updated whenever a batch-scoring run publishes a predictions partition of `model`."""
    return Asset(name=f"predictions/{model}", uri=f"mlops://predictions/{model}")


def challenger_asset(model: str) -> Asset:
    """The Asset the monitoring DAG emits when the challenger of `model` beat production in shadow.

    Its event's extra holds `version` (the challenger that won) and `evidence` (the comparison);
    the `<model>_registry` DAG proposes that version for production on it.
    """
    return Asset(name=f"challenger/{model}", uri=f"mlops://challenger/{model}")
