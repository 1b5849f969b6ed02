"""The REST scoring service: the production version of each model it serves behind one FastAPI app.

It serves every model config, or those `SERVING_MODELS` names (comma-separated config names,
serving.selection); a model outside the selection gets 404 naming the served ones. Run it under
gunicorn with uvicorn workers (`serving/gunicorn.conf.py`, `make serve`). Routes:
`POST /v1/models/{model}/predict` (one record or a list; `?explain=k` adds each record's top-k
reasons; a credit_risk application without history tables reads its history from the online
store, MLOPS_ONLINE_STORE_URL; 503 "no production version of <registered name> yet" for a served
model that has none, while the others score), `GET /v1/models`, `GET /v1/models/{model}`,
`GET /health` (with the served models), `GET /ready` (200 once every served model has a version
loaded, else 503 with each missing model's reason: "no production version of <name> yet", "not
loaded yet", or for any load or registry error a fixed text pointing at /health and the log),
`GET /ready/{model}` (the same for one model, 404 for a model not served here), `GET /metrics`,
and with MLOPS_WEBHOOK_SECRET set `POST /internal/registry-events` (MLflow's signed alias webhook,
serving.webhook). With `SERVING_API_KEY` set, scoring and model routes need `Authorization: Bearer
<key>`; health, readiness and metrics stay open, and the webhook authenticates by its HMAC
signature instead. The key, the body limit and the in-flight budget (`SERVING_MAX_BODY_BYTES`,
`SERVING_MAX_INFLIGHT_BYTES`) are enforced by `serving.guard` before the body is read.
"""

# No `from __future__ import annotations`: FastAPI must see the per-model body types as objects.
import gc
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from tabular_mlops import tracking
from tabular_mlops.features import FeatureBuildError
from tabular_mlops.online_store import OnlineStoreError
from tabular_mlops.webhooks import SECRET_ENV, webhook_secret

from serving.batching import Batcher
from serving.guard import RequestGuard, request_id, warn_if_open
from serving.lean import Scored, ScoringInputError
from serving.metrics import BATCH_ROWS, LATENCY, RECORD_WARNINGS, REQUESTS, VERSION, exposition
from serving.models import (
    ModelStore,
    NoProduction,
    NotServable,
    Served,
    limit_registry_retries,
    max_records,
    no_production,
    reload_seconds,
    signing_status,
)
from serving.schemas import MAX_EXPLAIN, PredictResponse, RecordChecker, request_model, request_records
from serving.selection import serving_configs
from serving.shadow import Shadow
from serving.webhook import NoticeBoard, events_dir, mount

log = logging.getLogger("serving")
# /ready's reason for a load or registry error: the error itself may hold registry URLs and
# exception text, and /ready is open; /health (also open, internal network) and the log have it.
NOT_LOADED = "not loaded; details in /health and the service log"
# The caller's data, not a server fault: values the schema allows but the features cannot be
# computed from (an overflow in the SQL, an infinite ratio).
_INPUT_ERRORS = (ScoringInputError, FeatureBuildError, ValueError, OverflowError, KeyError)


def create_app(store: ModelStore | None = None, watch: bool = True) -> FastAPI:
    """The app over a model store (default: the configs SERVING_MODELS selects, every one when unset)."""
    limit_registry_retries()
    signing_state = signing_status()  # also refuses a malformed key before anything loads
    if not signing_state["verified"]:
        log.warning("MODEL SIGNATURES ARE NOT CHECKED: set MLOPS_MODEL_SIGNING_KEY (docs/security.md)")
    store = store or ModelStore(serving_configs())
    store.on_load = lambda name, served: VERSION.labels(name).set(float(served.version))
    shadow = store.shadow = store.shadow or Shadow(store.configs)  # challengers, off the response path
    secret = webhook_secret()  # a too-short secret stops the worker before anything loads
    board = NoticeBoard(events_dir(), store.configs) if secret else None
    if board is None:
        log.info("%s is not set: no registry webhook endpoint, aliases are polled only", SECRET_ENV)
    batchers: dict[str, Batcher] = {}

    def scorer(name: str) -> Any:
        def score(records: list[dict[str, Any]]) -> Any:
            BATCH_ROWS.labels(name).observe(len(records))
            return store.score(name, records)

        return score

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store.refresh()
        # Everything loaded so far (libraries, models) lives as long as the worker: move it out
        # of the garbage collector's reach so full collections stay short under load (churn,
        # concurrency 32: p99 227 ms -> 31 ms).
        gc.collect()
        gc.freeze()
        if watch:
            store.watch(reload_seconds())
        if board is not None:  # a webhook's notice: reload now, not at the next poll
            board.watch(store.refresh)
        yield
        store.stop()
        if board is not None:
            board.stop()
        for batcher in batchers.values():
            batcher.close()
        shadow.close()  # scores what is queued and writes the shadow rows still buffered

    app = FastAPI(title="tabular-mlops scoring", version="1", lifespan=lifespan)
    app.state.store = store
    # Outside FastAPI's body parsing: the key and the body size are checked before any work.
    app.add_middleware(RequestGuard)
    warn_if_open()
    if board is not None and secret is not None:
        mount(app, store.configs, secret, board)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc.errors(), getattr(exc, "body", None))
        rid = request_id(request.scope)
        return JSONResponse(
            status_code=422, content={"detail": errors, "request_id": rid}, headers={"X-Request-ID": rid}
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request.scope)
        log.exception("request_id=%s unhandled error", rid)
        return JSONResponse(
            status_code=500,
            content={"detail": "internal error; see the service log", "request_id": rid},
            headers={"X-Request-ID": rid},
        )

    def predict_route(name: str) -> None:
        body_type = request_model(store.configs[name])
        checker = RecordChecker(store.configs[name])
        limit = max_records()
        batcher = batchers[name] = Batcher(name, scorer(name), max_rows=limit)

        async def predict(
            request: Request,
            body: Annotated[body_type | list[body_type], Body()],  # type: ignore[valid-type]
            explain: Annotated[
                int | None, Query(ge=0, le=MAX_EXPLAIN, description="top-k reasons for every record")
            ] = None,
        ) -> Response:
            started = time.perf_counter()
            rid = request_id(request.scope)
            records = body if isinstance(body, list) else [body]
            status = "200"
            try:
                if not records:
                    status = "422"
                    raise HTTPException(status_code=422, detail="no records to score")
                if len(records) > limit:
                    status = "413"
                    raise HTTPException(status_code=413, detail=f"at most {limit} records per request")
                dumped = request_records(store.configs[name], records, explain)
                # Values batch scoring would score with a warning: scored here too, and named.
                warnings = checker.warnings(dumped)
                try:
                    served, scored = await batcher.submit(dumped)
                except OnlineStoreError as exc:
                    status = "503"
                    log.warning("request_id=%s model=%s online store: %s", rid, name, exc)
                    raise HTTPException(status_code=503, detail=_store_unavailable(name, rid)) from None
                except NotServable as exc:
                    status = "503"
                    # The reason may hold registry URLs and errors: it goes to the log, not the caller.
                    log.warning("request_id=%s model=%s not servable: %s", rid, name, exc)
                    raise HTTPException(status_code=503, detail=_not_servable(name, rid, exc)) from None
                except _INPUT_ERRORS as exc:
                    status = "422"
                    log.warning("request_id=%s model=%s cannot score: %r", rid, name, exc)
                    raise HTTPException(status_code=422, detail=_unscorable(rid)) from None
                for warning in warnings:
                    RECORD_WARNINGS.labels(name, warning["kind"]).inc()
                content = _prediction_json(served, rid, scored, warnings)
                # Answered: the challenger, if any, gets these records on its own thread (a queue put).
                shadow.submit(name, rid, dumped, served, scored.probabilities)
                return Response(
                    content=content,
                    media_type="application/json",
                    headers={"X-Request-ID": rid},
                )
            except HTTPException as exc:
                exc.headers = {**(exc.headers or {}), "X-Request-ID": rid}
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
    async def unknown_model(model: str) -> None:
        raise _not_served(model, store)

    def describe(name: str) -> dict[str, Any]:
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

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"models": [describe(name) for name in store.configs]}

    @app.get("/v1/models/{model}")
    async def model(model: str) -> dict[str, Any]:
        if model not in store.configs:
            raise _not_served(model, store)
        return describe(model)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "models": list(store.configs),  # what this instance serves (SERVING_MODELS)
            "versions": {n: s.version for n, s in store.served.items()},
            "errors": dict(store.errors),
            "registry": store.registry,
            "signing": signing_state,
            "challengers": {n: shadow.status(n) for n in store.configs},
            "online_store": {
                n: s.lean.history.status() for n, s in store.served.items() if s.lean.history is not None
            },
        }

    @app.get("/ready")
    async def ready() -> JSONResponse:
        missing = {name: reason for name in store.configs if (reason := _not_ready(store, name))}
        content = {"ready": not missing, "models": list(store.configs), "missing": missing}
        return JSONResponse(status_code=503 if missing else 200, content=content)

    @app.get("/ready/{model}")
    async def model_ready(model: str) -> JSONResponse:
        if model not in store.configs:
            raise _not_served(model, store)
        reason = _not_ready(store, model)
        if reason is not None:
            return JSONResponse(status_code=503, content={"model": model, "ready": False, "reason": reason})
        return JSONResponse(content={"model": model, "ready": True, "version": store.served[model].version})

    @app.get("/metrics")
    async def metrics() -> Response:
        content, media_type = exposition()
        return Response(content=content, media_type=media_type)

    return app


def _validation_errors(errors: Any, body: Any) -> list[dict[str, Any]]:
    """422 details naming the record and the field, for the shape the body has.

    A body may be one record or a list; pydantic reports the failures under both readings,
    so only those of the shape sent are kept (the others say "not a list" or "not an object")."""
    shape = "list" if isinstance(body, list) else "one"
    out = []
    for error in errors:
        if not error["loc"] or error["loc"][0] != "body":  # a query parameter (explain): names itself
            field = ".".join(str(p) for p in error["loc"])
            out.append({"record": None, "field": field, "message": error["msg"], "type": error["type"]})
            continue
        loc = [str(p) for p in error["loc"][1:]]  # after "body": the union branch, then the path
        branch = "list" if loc and loc[0].startswith("list[") else "one"
        if loc and branch != shape and isinstance(body, list | dict):
            continue
        path, record = loc[1:], None
        if branch == "list" and path and path[0].isdigit():
            record, path = int(path[0]), path[1:]
        elif isinstance(body, dict):
            record = 0
        field = ".".join(path) or "(body)"
        out.append({"record": record, "field": field, "message": error["msg"], "type": error["type"]})
    return out


def _not_served(model: str, store: ModelStore) -> HTTPException:
    """404 for a model this instance does not serve (no config, or outside SERVING_MODELS)."""
    served = ", ".join(store.configs) or "none"
    detail = f"model {model!r} is not served here; served models: {served}"
    return HTTPException(status_code=404, detail=detail)


def _not_ready(store: ModelStore, name: str) -> str | None:
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


def _not_servable(name: str, rid: str, exc: NotServable) -> str:
    """The 503 message: "no production version of <registered> yet" as is; any other reason (registry
    URLs, load errors) stays in the log behind a stable message with the request id."""
    if isinstance(exc, NoProduction):
        return str(exc)
    return f"model {name!r} is not servable now (request_id {rid})"


def _unscorable(rid: str) -> str:
    """The stable 422 message when valid-looking records break the feature SQL (detail in the log)."""
    return (
        "cannot score these records: their values are allowed by the schema but the features "
        f"cannot be computed from them (request_id {rid}; the service log has the detail)"
    )


def _store_unavailable(name: str, rid: str) -> str:
    """The 503 message when id-only records cannot get their history (detail in the log)."""
    return (
        f"the online store of {name!r} cannot be read now, so records without history tables cannot be "
        "scored; send the applicant's history tables in the request to score without the store "
        f"(request_id {rid}; the service log and /health have the detail)"
    )


def _prediction_json(
    served: Served, request_id: str, scored: Scored, warnings: list[dict[str, Any]]
) -> bytes:
    """The response body (built by hand: a pydantic round trip per request costs more than scoring)."""
    threshold = served.threshold
    details = scored.details or [{}] * len(scored)
    predictions = [
        {"probability": p, "prediction": int(p >= threshold), "threshold": threshold, **extra}
        for p, extra in zip(scored.probabilities.tolist(), details, strict=True)
    ]
    body = {
        "model_name": served.registered_name,
        "model_version": served.version,
        "request_id": request_id,
        "predictions": predictions,
        "warnings": warnings,
    }
    return json.dumps(body, separators=(",", ":")).encode()


app = create_app() if os.environ.get("SERVING_LAZY_APP") != "1" else None
