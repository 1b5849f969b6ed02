"""Waiting for an input partition's completion marker without holding a worker slot.

The producer of `<lake>/incoming/<model>/dt=<date>/` writes `scoring.completion_marker`
(`_SUCCESS`) as its last file. `WaitForPartition` looks for it once; when it is missing the task
defers to `MarkerTrigger`, which polls the marker (a local path or an s3:// key) in the
triggerer until it appears or `scoring.wait_hours` have passed, and then the task fails naming
the path and the wait, without a retry (waiting again would only repeat the wait).
FileTrigger and S3KeyTrigger have no deadline of their own, and dag.test() runs a trigger
inline until it fires, so the deadline lives in the trigger.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

# The triggerer is given this much longer than the wait, so a slow poll still ends in our message.
_GRACE = timedelta(minutes=10)
_HOUR = timedelta(hours=1)


class MarkerTrigger(BaseTrigger):
    """Fires {"status": "found"} once the marker exists, {"status": "timeout"} at the deadline."""

    def __init__(self, marker: str, aws_conn_id: str, deadline: str, poke_seconds: float) -> None:
        super().__init__()
        self.marker, self.aws_conn_id = marker, aws_conn_id
        self.deadline, self.poke_seconds = deadline, poke_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and arguments, for the triggerer."""
        arguments = {"marker": self.marker, "aws_conn_id": self.aws_conn_id}
        return f"{__name__}.MarkerTrigger", {
            **arguments,
            "deadline": self.deadline,
            "poke_seconds": self.poke_seconds,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the marker (the S3 hook is synchronous, so in a thread) until found or too late."""
        from tabular_mlops import storage

        deadline = datetime.fromisoformat(self.deadline)
        while True:
            if await asyncio.to_thread(storage.exists, self.marker, self.aws_conn_id):
                yield TriggerEvent({"status": "found", "marker": self.marker})
                return
            left = (deadline - datetime.now(UTC)).total_seconds()
            if left <= 0:
                yield TriggerEvent({"status": "timeout", "marker": self.marker})
                return
            await asyncio.sleep(min(self.poke_seconds, left))


def poke_seconds(wait: timedelta) -> float:
    """How often the trigger looks: a hundredth of the wait, between 1 s and a minute."""
    return max(1.0, min(60.0, wait.total_seconds() / 100))


class WaitForPartition(BaseOperator):
    """Wait for `<where["input"]>/<completion_marker>` of a model's config; return the marker's location."""

    template_fields = ("where",)

    def __init__(self, *, model: str, where: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model, self.where = model, where

    def execute(self, context: Any) -> str:
        """Return at once when the marker is there; defer to MarkerTrigger otherwise."""
        from tabular_mlops import storage
        from tabular_mlops.config import get_model_config

        config = get_model_config(self.model)
        marker = storage.join(self.where["input"], config.scoring.completion_marker)
        if storage.exists(marker, config.data.aws_conn_id):
            return marker
        wait = timedelta(hours=config.scoring.wait_hours)
        self.log.info(
            "%s not there yet; waiting up to %s h (scoring.wait_hours)", marker, wait / timedelta(hours=1)
        )
        deadline = (datetime.now(UTC) + wait).isoformat()
        trigger = MarkerTrigger(marker, config.data.aws_conn_id, deadline, poke_seconds(wait))
        self.defer(trigger=trigger, method_name="resume", timeout=wait + _GRACE)

    def resume(self, context: Any, event: dict[str, Any]) -> str:
        """After the trigger: the marker's location, or a failure naming the path and the wait."""
        from airflow.sdk.exceptions import AirflowFailException

        from tabular_mlops.config import get_model_config

        if event.get("status") == "found":
            return str(event["marker"])
        hours = get_model_config(self.model).scoring.wait_hours
        raise AirflowFailException(
            f"{event.get('marker')}: the completion marker did not appear within {hours:g} h "
            "(scoring.wait_hours); its producer writes it as the partition's last file. Nothing was scored"
        )
