"""What every DAG of the bundle shares: start date, one run at a time, owner, tags and retries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tabular_mlops.config import ModelConfig

START_DATE = datetime(2026, 1, 1)


def dag_arguments(config: ModelConfig, kind: str, catchup: bool = False) -> dict[str, Any]:
    """@dag keyword arguments shared by the training, batch-scoring and monitoring DAGs of a model.

    Every task retries with exponential back-off, because registry, storage and mail calls can
    fail for a moment; tasks raise AirflowFailException for what no retry can fix (bad data, a
    refused candidate, a missing partition).
    """
    return {
        "start_date": START_DATE,
        "catchup": catchup,
        "max_active_runs": 1,
        "tags": [kind, config.name, *config.tags],
        "default_args": {
            "owner": config.owner,
            "retries": config.retries,
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=15),
        },
    }
