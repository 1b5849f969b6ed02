"""FastAPI dependencies: what a route needs from the app it runs in (the model store, its scorers).

create_app puts them on `app.state`; routes ask for them by type (`store: StoreDep`) instead of
closing over create_app's locals, so a route module stands alone and a test can build its own app.
The dependencies are `async`: FastAPI runs a plain `def` dependency in its thread pool, a hop the
scoring path should not pay per request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from serving.batching import Batcher
from serving.models import ModelStore
from serving.shadow import Shadow


async def get_store(request: Request) -> ModelStore:
    """The model store of the app serving this request."""
    store: ModelStore = request.app.state.store
    return store


async def get_shadow(request: Request) -> Shadow:
    """The challengers' shadow scorer of the app serving this request."""
    shadow: Shadow = request.app.state.shadow
    return shadow


async def get_batchers(request: Request) -> dict[str, Batcher]:
    """The micro-batcher of each served model, by config name."""
    batchers: dict[str, Batcher] = request.app.state.batchers
    return batchers


async def get_signing(request: Request) -> dict[str, Any]:
    """Whether versions are verified before loading (models.signing_status, read at start-up)."""
    signing: dict[str, Any] = request.app.state.signing
    return signing


StoreDep = Annotated[ModelStore, Depends(get_store)]
ShadowDep = Annotated[Shadow, Depends(get_shadow)]
BatchersDep = Annotated[dict[str, Batcher], Depends(get_batchers)]
SigningDep = Annotated[dict[str, Any], Depends(get_signing)]
