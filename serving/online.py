"""History features from the online store for requests that bring only the application.

A credit_risk request with `{"application": {...}}` alone gets its history part (the config's
`features.history_view`) from the online store, where `mlops materialize` wrote it with the
version's own SQL; lean.py computes the application part (`features.application_view`) from the
request. An applicant the store does not know is scored as an applicant without history, as
batch scoring scores one, and the response says so (`history_source: "none"`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from tabular_mlops.config import ModelConfig
from tabular_mlops.features import view_closure
from tabular_mlops.online_store import OnlineReader, OnlineStoreError, iso, unpack

log = logging.getLogger("serving")
Columns = dict[str, np.ndarray]
FROM_STORE = "online_store"
FROM_REQUEST = "request"
NO_HISTORY = "none"


class OnlineHistory:
    """One version's view of the online store: its SQL's namespace and the application part."""

    def __init__(self, config: ModelConfig, sql: dict[str, str], feature_columns: list[str]) -> None:
        application, history = config.features.application_view, config.features.history_view
        if application is None or history is None:
            raise ValueError(f"{config.name} has no online split (features.application_view/history_view)")
        self.application_view = application
        self.application_sql = view_closure(sql, application)
        self.reader = OnlineReader(config.name, view_closure(sql, history))
        self.feature_columns = feature_columns
        self._checked: str | None = None  # the generation whose columns were checked

    def merge(self, columns: Columns, keys: list[Any]) -> list[dict[str, Any]]:
        """Add the store's history columns for these entity keys; return each record's provenance."""
        found = self.reader.lookup([str(k) for k in keys])
        meta = found.meta
        if self._checked != meta.generation:
            missing = sorted(set(self.feature_columns) - set(columns) - set(meta.columns))
            if missing:
                raise OnlineStoreError(
                    f"the online store's generation {meta.generation} lacks feature(s) {missing[:5]}: "
                    "materialise again with this version"
                )
            self._checked = meta.generation
        width = len(meta.columns)
        history = np.full((len(keys), width), np.nan)
        details: list[dict[str, Any]] = []
        for i, blob in enumerate(found.rows):
            if blob is None:
                details.append({"history_source": NO_HISTORY, "features_as_of": None})
                continue
            as_of, history[i] = unpack(blob, width)
            details.append({"history_source": FROM_STORE, "features_as_of": iso(as_of)})
        for j, column in enumerate(meta.columns):
            columns[column] = history[:, j]
        return details

    def status(self) -> dict[str, Any]:
        """The store as /health shows it for this version."""
        return self.reader.status()

    def close(self) -> None:
        """Release the store's connections."""
        self.reader.close()
