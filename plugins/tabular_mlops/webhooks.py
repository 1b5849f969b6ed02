"""The MLflow registry webhook that tells serving an alias moved (`mlops webhook --url URL`).

MLflow's tracking server (3.3+) posts `model_version_alias.created` / `.deleted` events, signed with
HMAC-SHA256 over `<delivery id>.<timestamp>.<body>` with the webhook's secret, to the URL registered
here: serving's internal endpoint, which verifies the signature and reloads the model at once
(serving/webhook.py). Registering is idempotent: the webhook is found by name and updated, or
created. Only the MLflow admin may manage webhooks, so this runs in the admin's one-shot bootstrap.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_NAME = "tabular-mlops-serving-reload"
EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
SECRET_ENV = "MLOPS_WEBHOOK_SECRET"  # noqa: S105 - the variable's name, not a secret
MIN_SECRET = 16  # characters: an HMAC key short enough to guess would let anyone trigger reloads
ENDPOINT_PATH = "/internal/registry-events"


class WebhookError(ValueError):
    """A missing or invalid webhook setting, named so the operator can fix it."""


def webhook_secret(env: dict[str, str] | None = None) -> str | None:
    """MLOPS_WEBHOOK_SECRET, or None when unset; WebhookError when it is too short to be a key."""
    value = (os.environ if env is None else env).get(SECRET_ENV, "")
    if not value:
        return None
    if len(value) < MIN_SECRET:
        raise WebhookError(f"{SECRET_ENV} is shorter than {MIN_SECRET} characters")
    return value


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"--url must be an http(s) URL with a host, got {url!r}")
    return url


def _find(client: Any, name: str) -> Any | None:
    """The webhook called `name`, through every page of the listing."""
    token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        for webhook in page:
            if webhook.name == name:
                return webhook
        token = page.token
        if not token:
            return None


def register(url: str, secret: str | None = None, name: str = WEBHOOK_NAME) -> dict[str, Any]:
    """Create or update the alias webhook pointing at `url`, signed with the secret; return a summary."""
    from tabular_mlops import tracking

    secret = secret or webhook_secret()
    if not secret:
        raise WebhookError(f"{SECRET_ENV} is not set: serving could not tell MLflow's calls from forgeries")
    url = _checked_url(url)
    client = tracking.configure()
    description = "tabular-mlops: serving reloads a model when its production or challenger alias moves"
    existing = _find(client, name)
    if existing is None:
        webhook = client.create_webhook(
            name=name, url=url, events=list(EVENTS), description=description, secret=secret, status="ACTIVE"
        )
        action = "created"
    else:  # the secret and URL may have changed since: set everything again
        webhook = client.update_webhook(
            existing.webhook_id,
            url=url,
            events=list(EVENTS),
            description=description,
            secret=secret,
            status="ACTIVE",
        )
        action = "updated"
    return {
        "webhook_id": webhook.webhook_id,
        "name": webhook.name,
        "url": webhook.url,
        "events": [str(e) for e in webhook.events],
        "status": str(webhook.status),
        "action": action,
    }
