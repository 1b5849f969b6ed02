"""Error answers of the scoring API: the exception handlers and the error bodies and messages.

Callers get stable words and the request id; the detail (registry URLs, exception text) goes to
the log under `request_id=<id>`, never into a response.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.guard import request_id
from serving.models import ModelStore, NoProduction, NotServable

log = logging.getLogger("serving")


def add_exception_handlers(app: FastAPI) -> None:
    """Answer schema errors with 422s naming record and field, and anything unhandled with a bare 500."""
    app.exception_handler(RequestValidationError)(invalid)
    app.exception_handler(Exception)(unexpected)


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each failure's record and field, for the shape (one record or a list) sent."""
    errors = validation_errors(exc.errors(), getattr(exc, "body", None))
    rid = request_id(request.scope)
    return JSONResponse(
        status_code=422, content={"detail": errors, "request_id": rid}, headers={"X-Request-ID": rid}
    )


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """500 naming only the request id; the traceback goes to the log."""
    rid = request_id(request.scope)
    log.exception("request_id=%s unhandled error", rid)
    return JSONResponse(
        status_code=500,
        content={"detail": "internal error; see the service log", "request_id": rid},
        headers={"X-Request-ID": rid},
    )


def validation_errors(errors: Any, body: Any) -> list[dict[str, Any]]:
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


def not_served(model: str, store: ModelStore) -> HTTPException:
    """404 for a model this instance does not serve (no config, or outside SERVING_MODELS)."""
    served = ", ".join(store.configs) or "none"
    detail = f"model {model!r} is not served here; served models: {served}"
    return HTTPException(status_code=404, detail=detail)


def not_servable(name: str, rid: str, exc: NotServable) -> str:
    """The 503 message: "no production version of <registered> yet" as is; any other reason (registry
    URLs, load errors) stays in the log behind a stable message with the request id."""
    if isinstance(exc, NoProduction):
        return str(exc)
    return f"model {name!r} is not servable now (request_id {rid})"


def unscorable(rid: str) -> str:
    """The stable 422 message when valid-looking records break the feature SQL (detail in the log)."""
    return (
        "cannot score these records: their values are allowed by the schema but the features "
        f"cannot be computed from them (request_id {rid}; the service log has the detail)"
    )


def store_unavailable(name: str, rid: str) -> str:
    """The 503 message when id-only records cannot get their history (detail in the log)."""
    return (
        f"the online store of {name!r} cannot be read now, so records without history tables cannot be "
        "scored; send the applicant's history tables in the request to score without the store "
        f"(request_id {rid}; the service log and /health have the detail)"
    )
