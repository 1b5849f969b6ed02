"""The REST scoring service: every model config's production version behind one FastAPI app.

Run it under gunicorn with uvicorn workers (`serving/gunicorn.conf.py`, `make serve`). Routes:
`POST /v1/models/{model}/predict` (one record or a list), `GET /v1/models`, `GET /v1/models/{model}`,
`GET /health`, `GET /ready`, `GET /metrics`. With `SERVING_API_KEY` set, scoring and model routes
need `Authorization: Bearer <key>`; health, readiness and metrics stay open.
"""

# No `from __future__ import annotations`: FastAPI must see the per-model body types as objects.
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import duckdb
from fastapi import Body, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from tabular_mlops.config import load_model_configs
from tabular_mlops.features import FeatureBuildError

from serving.models import ModelStore, max_records, reload_seconds, score_frame
from serving.schemas import PredictResponse, request_model

log = logging.getLogger("serving")
METRICS = CollectorRegistry()
REQUESTS = Counter("serving_requests", "Scoring requests", ["model", "status"], registry=METRICS)
LATENCY = Histogram(
    "serving_request_seconds",
    "Scoring request latency",
    ["model", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=METRICS,
)
VERSION = Gauge("serving_model_version", "Registry version served", ["model"], registry=METRICS)


def _check_key(request: Request) -> None:
    """401 unless the request carries the configured API key (no key configured: open)."""
    expected = os.environ.get("SERVING_API_KEY")
    if not expected:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        raise HTTPException(
            status_code=401, detail="missing or wrong API key", headers={"WWW-Authenticate": "Bearer"}
        )


def create_app(store: ModelStore | None = None, watch: bool = True) -> FastAPI:
    """The app over a model store (default: every config in the config folder)."""
    store = store or ModelStore(load_model_configs())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store.refresh()
        if watch:
            store.watch(reload_seconds())
        yield
        store.stop()

    app = FastAPI(title="tabular-mlops scoring", version="1", lifespan=lifespan)
    app.state.store = store

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"][1:]) or "(body)",
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(status_code=500, content={"detail": "internal error; see the service log"})

    def predict_route(name: str) -> None:
        body_type = request_model(store.configs[name])

        async def predict(
            request: Request,
            response: Response,
            body: Annotated[body_type | list[body_type], Body()],  # type: ignore[valid-type]
            _: Annotated[None, Depends(_check_key)],
        ) -> PredictResponse:
            started = time.perf_counter()
            request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
            response.headers["X-Request-ID"] = request_id
            records = body if isinstance(body, list) else [body]
            status = "200"
            try:
                if not records:
                    status = "422"
                    raise HTTPException(status_code=422, detail="no records to score")
                if len(records) > max_records():
                    status = "413"
                    raise HTTPException(
                        status_code=413, detail=f"at most {max_records()} records per request"
                    )
                served = store.served.get(name)
                if served is None:
                    status = "503"
                    raise HTTPException(
                        status_code=503, detail=f"{name}: no version loaded: {store.errors.get(name)}"
                    )
                rows = [r.model_dump() for r in records]
                key = served.config.features.entity_key
                if served.config.features.model_input != "raw":
                    ids = [r["application"][key] for r in rows]
                    if len(set(ids)) != len(ids):
                        status = "422"
                        raise HTTPException(status_code=422, detail=f"{key} repeats within the request")
                try:
                    probabilities = score_frame(served, rows)
                except (duckdb.Error, FeatureBuildError, ValueError, OverflowError, KeyError) as exc:
                    # Values the schema allows but the features cannot be computed from (an
                    # overflow in the SQL, an infinite ratio): the caller's data, not a server fault.
                    status = "422"
                    raise HTTPException(
                        status_code=422, detail=f"cannot score these records: {exc}"
                    ) from None
                threshold = served.threshold
                return PredictResponse(
                    model_name=served.registered_name,
                    model_version=served.version,
                    request_id=request_id,
                    predictions=[
                        {"probability": float(p), "prediction": int(p >= threshold), "threshold": threshold}
                        for p in probabilities
                    ],
                )
            except HTTPException:
                raise
            except Exception:
                status = "500"
                raise
            finally:
                REQUESTS.labels(name, status).inc()
                LATENCY.labels(name, status).observe(time.perf_counter() - started)

        app.post(
            f"/v1/models/{name}/predict",
            response_model=PredictResponse,
            summary=f"Score {name} records",
            name=f"predict_{name}",
        )(predict)

    for name in store.configs:
        predict_route(name)

    @app.post("/v1/models/{model}/predict", include_in_schema=False)
    async def unknown_model(model: str, _: None = Depends(_check_key)) -> None:
        raise HTTPException(
            status_code=404, detail=f"unknown model {model!r}; known: {sorted(store.configs)}"
        )

    def describe(name: str) -> dict[str, Any]:
        served = store.served.get(name)
        schema = request_model(store.configs[name]).model_json_schema()
        if served is None:
            return {"model": name, "loaded": False, "error": store.errors.get(name), "request_schema": schema}
        return {
            "model": name,
            "loaded": True,
            "registered_name": served.registered_name,
            "version": served.version,
            "run_id": served.run_id,
            "threshold": served.threshold,
            "metrics": served.metrics,
            "loaded_at": served.loaded_at,
            "request_schema": schema,
        }

    @app.get("/v1/models")
    async def models(_: None = Depends(_check_key)) -> dict[str, Any]:
        return {"models": [describe(name) for name in store.configs]}

    @app.get("/v1/models/{model}")
    async def model(model: str, _: None = Depends(_check_key)) -> dict[str, Any]:
        if model not in store.configs:
            raise HTTPException(
                status_code=404, detail=f"unknown model {model!r}; known: {sorted(store.configs)}"
            )
        return describe(model)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "versions": {n: s.version for n, s in store.served.items()},
            "errors": dict(store.errors),
        }

    @app.get("/ready")
    async def ready() -> JSONResponse:
        missing = sorted(set(store.configs) - set(store.served))
        code = 200 if not missing else 503
        return JSONResponse(status_code=code, content={"ready": not missing, "missing": missing})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        for name, served in store.served.items():
            VERSION.labels(name).set(float(served.version))
        return PlainTextResponse(generate_latest(METRICS).decode(), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app() if os.environ.get("SERVING_LAZY_APP") != "1" else None
