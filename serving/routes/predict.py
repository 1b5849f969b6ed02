"""`POST /v1/models/{model}/predict`: one route per served model, each with its model's body type.

A request is checked (records, the per-request limit), its value-rule warnings named, its records
scored in the model's next micro-batch (serving.batching), and answered with a body built by hand;
the challenger, if any, scores the same records afterwards, off the response path (serving.shadow).
A model not served here gets 404 naming the served ones.
"""

# No `from __future__ import annotations`: FastAPI must see the per-model body types as objects.
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from pydantic import BaseModel
from tabular_mlops.config import ModelConfig
from tabular_mlops.features import FeatureBuildError
from tabular_mlops.online_store import OnlineStoreError

from serving.batching import Batcher
from serving.deps import BatchersDep, ShadowDep, StoreDep
from serving.errors import not_servable, not_served, store_unavailable, unscorable
from serving.guard import request_id
from serving.lean import Scored, ScoringInputError
from serving.metrics import BATCH_ROWS, LATENCY, RECORD_WARNINGS, REQUESTS
from serving.models import ModelStore, NotServable, Served, max_records
from serving.schemas import MAX_EXPLAIN, PredictResponse, RecordChecker, request_model, request_records
from serving.shadow import Shadow

log = logging.getLogger("serving")
# The caller's data, not a server fault: values the schema allows but the features cannot be
# computed from (an overflow in the SQL, an infinite ratio).
_INPUT_ERRORS = (ScoringInputError, FeatureBuildError, ValueError, OverflowError, KeyError)


def router_for(configs: Mapping[str, ModelConfig]) -> APIRouter:
    """The predict route of each served model, then the 404 for any other model."""
    api = APIRouter()
    for name, config in configs.items():
        api.add_api_route(
            f"/v1/models/{name}/predict",
            predict_endpoint(name, config),
            methods=["POST"],
            response_model=PredictResponse,
            summary=f"Score {name} records",
            name=f"predict_{name}",
        )
    # After the served models' routes, which match first: this one answers every other model.
    api.add_api_route("/v1/models/{model}/predict", unknown_model, methods=["POST"], include_in_schema=False)
    return api


async def unknown_model(model: str, store: StoreDep) -> None:
    """404 naming the served models, for a model this instance does not serve."""
    raise not_served(model, store)


def batchers_for(store: ModelStore) -> dict[str, Batcher]:
    """One micro-batcher per served model, scoring with the version the store serves at the time."""
    limit = max_records()
    return {name: Batcher(name, _scorer(store, name), max_rows=limit) for name in store.configs}


def _scorer(store: ModelStore, name: str) -> Callable[[list[dict[str, Any]]], Any]:
    """What the batcher of `name` calls on its scorer thread with a batch's records."""

    def score(records: list[dict[str, Any]]) -> tuple[Served, Scored]:
        BATCH_ROWS.labels(name).observe(len(records))
        return store.score(name, records)

    return score


def predict_endpoint(name: str, config: ModelConfig) -> Callable[..., Awaitable[Response]]:
    """The predict endpoint of one model: its body type (one record or a list), metrics, request id."""
    scoring = _Scoring(name, config, RecordChecker(config), max_records())
    body_type = request_model(config)

    async def predict(
        request: Request,
        body: Annotated[body_type | list[body_type], Body()],  # type: ignore[valid-type]
        batchers: BatchersDep,
        shadow: ShadowDep,
        explain: Annotated[
            int | None, Query(ge=0, le=MAX_EXPLAIN, description="top-k reasons for every record")
        ] = None,
    ) -> Response:
        started = time.perf_counter()
        rid = request_id(request.scope)
        status = "200"
        try:
            records = body if isinstance(body, list) else [body]
            content = await scoring.answer(rid, records, explain, batchers[name], shadow)
            return Response(content=content, media_type="application/json", headers={"X-Request-ID": rid})
        except HTTPException as exc:
            status = str(exc.status_code)
            exc.headers = {**(exc.headers or {}), "X-Request-ID": rid}
            raise
        except Exception:
            status = "500"
            raise
        finally:
            REQUESTS.labels(name, status).inc()
            LATENCY.labels(name, status).observe(time.perf_counter() - started)

    return predict


@dataclass(frozen=True)
class _Scoring:
    """What one model's predict route fixes at start-up: its config, value-rule checks and limit."""

    name: str
    config: ModelConfig
    checker: RecordChecker
    limit: int

    async def answer(
        self, rid: str, records: list[BaseModel], explain: int | None, batcher: Batcher, shadow: Shadow
    ) -> bytes:
        """The response body of these records; an HTTPException for each refusal."""
        if not records:
            raise HTTPException(status_code=422, detail="no records to score")
        if len(records) > self.limit:
            raise HTTPException(status_code=413, detail=f"at most {self.limit} records per request")
        dumped = request_records(self.config, records, explain)
        # Values batch scoring would score with a warning: scored here too, and named.
        warnings = self.checker.warnings(dumped)
        served, scored = await self._scored(rid, dumped, batcher)
        for warning in warnings:
            RECORD_WARNINGS.labels(self.name, warning["kind"]).inc()
        content = prediction_json(served, rid, scored, warnings)
        # Answered: the challenger, if any, gets these records on its own thread (a queue put).
        shadow.submit(self.name, rid, dumped, served, scored.probabilities)
        return content

    async def _scored(
        self, rid: str, dumped: list[dict[str, Any]], batcher: Batcher
    ) -> tuple[Served, Scored]:
        """The records scored in the model's next batch; each scoring failure as its HTTP answer."""
        name = self.name
        try:
            # The batcher passes on what _scorer returns: the serving version and its Scored.
            served, scored = cast(tuple[Served, Scored], await batcher.submit(dumped))
        except OnlineStoreError as exc:
            log.warning("request_id=%s model=%s online store: %s", rid, name, exc)
            raise HTTPException(status_code=503, detail=store_unavailable(name, rid)) from None
        except NotServable as exc:
            # The reason may hold registry URLs and errors: it goes to the log, not the caller.
            log.warning("request_id=%s model=%s not servable: %s", rid, name, exc)
            raise HTTPException(status_code=503, detail=not_servable(name, rid, exc)) from None
        except _INPUT_ERRORS as exc:
            log.warning("request_id=%s model=%s cannot score: %r", rid, name, exc)
            raise HTTPException(status_code=422, detail=unscorable(rid)) from None
        return served, scored


def prediction_json(served: Served, request_id: str, scored: Scored, warnings: list[dict[str, Any]]) -> bytes:
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
