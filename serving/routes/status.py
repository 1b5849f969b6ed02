"""`GET /health`, `GET /ready`, `GET /ready/{model}` and `GET /metrics`: open, no API key needed.

/health (internal network) names load and registry errors; /ready gives only the reasons a caller
may see (`ready_reason`), since a load error may hold registry URLs and exception text.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at import.
import os
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from tabular_mlops import tracking

from serving.deps import ShadowDep, SigningDep, StoreDep
from serving.errors import not_served
from serving.metrics import exposition
from serving.models import ModelStore, no_production

# /ready's reason for a load or registry error: the error itself may hold registry URLs and
# exception text, and /ready is open; /health (also open, internal network) and the log have it.
NOT_LOADED = "not loaded; details in /health and the service log"

router = APIRouter()


@router.get("/health")
async def health(store: StoreDep, shadow: ShadowDep, signing: SigningDep) -> dict[str, Any]:
    """200 while the process runs: the models served, the versions loaded, why the rest is not."""
    return {
        "status": "ok",
        "pid": os.getpid(),
        "models": list(store.configs),  # what this instance serves (SERVING_MODELS)
        "versions": {n: s.version for n, s in store.served.items()},
        "errors": dict(store.errors),
        "registry": store.registry,
        "signing": signing,
        "challengers": {n: shadow.status(n) for n in store.configs},
        "online_store": {
            n: s.lean.history.status() for n, s in store.served.items() if s.lean.history is not None
        },
    }


@router.get("/ready")
async def ready(store: StoreDep) -> JSONResponse:
    """200 once every served model has a version loaded, else 503 with each missing model's reason."""
    missing = {name: reason for name in store.configs if (reason := ready_reason(store, name))}
    content = {"ready": not missing, "models": list(store.configs), "missing": missing}
    return JSONResponse(status_code=503 if missing else 200, content=content)


@router.get("/ready/{model}")
async def model_ready(model: str, store: StoreDep) -> JSONResponse:
    """One model's readiness: 200 with its version, 503 with the reason, 404 if not served here."""
    if model not in store.configs:
        raise not_served(model, store)
    reason = ready_reason(store, model)
    if reason is not None:
        return JSONResponse(status_code=503, content={"model": model, "ready": False, "reason": reason})
    return JSONResponse(content={"model": model, "ready": True, "version": store.served[model].version})


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus metrics, summed over every worker."""
    content, media_type = exposition()
    return Response(content=content, media_type=media_type)


def ready_reason(store: ModelStore, name: str) -> str | None:
    """Why `name` takes no traffic, in words fit for the open /ready routes (None: ready).

    "no production version of <registered> yet" and "not loaded yet" as they are; any other
    reason (a load error, a refused signature, the registry unreachable) becomes NOT_LOADED."""
    reason = store.not_ready(name)
    if reason is None:
        return None
    unpromoted = no_production(tracking.registered_name(store.configs[name].model.registered_name))
    if name in store.unpromoted or reason == unpromoted:
        return unpromoted
    return reason if name not in store.errors else NOT_LOADED
