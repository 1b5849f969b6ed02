"""The scoring API's routers, one module per area, included by serving.app.create_app in this order.

- `predict`: `POST /v1/models/{model}/predict`, one route per served model (its own body type),
  then a 404 naming the served models for any other model.
- `models`: `GET /v1/models`, `GET /v1/models/{model}`: what each served model is, and its schema.
- `status`: `GET /health`, `GET /ready`, `GET /ready/{model}`, `GET /metrics` (open, no API key).

Routes take what they need from the app through the dependencies of serving.deps. A route's
docstring is its operation's description in the OpenAPI document: it is written for the caller.
"""
