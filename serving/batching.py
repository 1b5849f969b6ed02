"""Adaptive micro-batching: requests that arrive while a model is busy are scored together.

The feature SQL costs the same few milliseconds for one record as for a hundred (DuckDB plans
the query on every call), so each model gets one scorer thread per worker, and every request
that queued while the previous batch ran goes into the next one. Under no load a request is
scored alone at once; under load the SQL cost is shared. The event loop never scores: it parses
and validates the next requests while the scorer thread holds no GIL inside DuckDB or the booster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _Job:
    records: list[dict[str, Any]]
    future: asyncio.Future[tuple[Any, np.ndarray]]


@dataclass
class Batcher:
    """Queues one model's requests and scores them in batches on that model's scorer thread.

    `score` runs on the scorer thread: it takes the records of a batch and returns the object
    that scored them (the served version) with one probability per record.
    """

    name: str
    score: Callable[[list[dict[str, Any]]], tuple[Any, np.ndarray]]
    max_rows: int = 1000
    _pending: list[_Job] = field(default_factory=list)
    _running: bool = False
    _executor: ThreadPoolExecutor | None = None

    async def submit(self, records: list[dict[str, Any]]) -> tuple[Any, np.ndarray]:
        """Score these records in the next batch; return (version that scored, probabilities)."""
        loop = asyncio.get_running_loop()
        job = _Job(records, loop.create_future())
        self._pending.append(job)
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await job.future

    def _take(self) -> list[_Job]:
        """The queued jobs that fit in one batch (at least one)."""
        taken: list[_Job] = []
        rows = 0
        while self._pending and (not taken or rows + len(self._pending[0].records) <= self.max_rows):
            job = self._pending.pop(0)
            taken.append(job)
            rows += len(job.records)
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"score-{self.name}")
        try:
            while self._pending:
                jobs = self._take()
                results = await loop.run_in_executor(self._executor, self._run, jobs)
                for job, result in zip(jobs, results, strict=True):
                    if job.future.done():  # the client went away
                        continue
                    if isinstance(result, BaseException):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)
        finally:
            self._running = False
            if self._pending:  # a request queued between the last take and here
                self._running = True
                loop.create_task(self._drain())

    def _run(self, jobs: list[_Job]) -> list[tuple[Any, np.ndarray] | BaseException]:
        """Score the batch; if it fails, score each request alone so only the culprit fails."""
        records = [r for job in jobs for r in job.records]
        try:
            served, probabilities = self.score(records)
        except Exception as exc:
            if len(jobs) == 1:
                return [exc]
            return [self._alone(job) for job in jobs]
        out: list[tuple[Any, np.ndarray] | BaseException] = []
        start = 0
        for job in jobs:
            out.append((served, probabilities[start : start + len(job.records)]))
            start += len(job.records)
        return out

    def _alone(self, job: _Job) -> tuple[Any, np.ndarray] | BaseException:
        try:
            return self.score(job.records)
        except Exception as exc:
            return exc

    def close(self) -> None:
        """Stop the scorer thread (after its current batch)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
