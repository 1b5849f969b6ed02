"""`GET /v1/models` and `GET /v1/models/{model}`: each served model, loaded or not, with its schema."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at import.
from typing import Any

from fastapi import APIRouter

from serving.deps import ShadowDep, StoreDep
from serving.errors import not_served
from serving.models import ModelStore
from serving.schemas import request_model
from serving.shadow import Shadow

router = APIRouter()


@router.get("/v1/models")
async def models(store: StoreDep, shadow: ShadowDep) -> dict[str, Any]:
    """Every model this instance serves: its loaded version or why none is, challenger, request schema."""
    return {"models": [describe(store, shadow, name) for name in store.configs]}


@router.get("/v1/models/{model}")
async def model(model: str, store: StoreDep, shadow: ShadowDep) -> dict[str, Any]:
    """One served model as in `GET /v1/models`; 404 naming the served models for any other."""
    if model not in store.configs:
        raise not_served(model, store)
    return describe(store, shadow, model)


def describe(store: ModelStore, shadow: Shadow, name: str) -> dict[str, Any]:
    """A served model: its loaded version (or why there is none), its challenger and request schema."""
    served = store.served.get(name)
    schema = request_model(store.configs[name]).model_json_schema()
    if served is None:
        return {
            "model": name,
            "loaded": False,
            "error": store.errors.get(name),
            "challenger": shadow.status(name),
            "request_schema": schema,
        }
    return {
        "model": name,
        "loaded": True,
        "registered_name": served.registered_name,
        "version": served.version,
        "run_id": served.run_id,
        "encoder": "compiled" if served.lean.compiled else "scikit-learn",
        "threshold": served.threshold,
        "metrics": served.metrics,
        "loaded_at": served.loaded_at,
        "challenger": shadow.status(name),
        "request_schema": schema,
    }
