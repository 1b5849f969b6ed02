"""The demo's voice: one line per step on the terminal, everything else in log files.

Airflow's task logs, MLflow's and the other libraries' output are written to file descriptors 1
and 2 by many hands (Python logging, warnings, C extensions, progress bars). Redirecting the
descriptors themselves, step by step, is the only way to catch all of it; the story keeps a
duplicate of the terminal's descriptor and writes there. A DAG run's progress comes from Airflow's
own listener hooks, which fire in-process under `dag.test()`.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import pluggy
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

OK, FAIL, WARN = "[green]✓[/]", "[red]✗[/]", "[yellow]![/]"
# Airflow's listener marker (project "airflow"), made here so that importing this module does not
# import Airflow before the demo has pointed AIRFLOW_HOME at its own folder. Hook argument names
# must match Airflow's specs (airflow.sdk listener spec, taskinstance).
hookimpl = pluggy.HookimplMarker("airflow")


class TaskProgress:
    """Airflow listener advancing a progress bar as the tasks of one DAG run finish."""

    def __init__(self, progress: Progress, bar: Any, total: int) -> None:
        self.progress, self.bar, self.total = progress, bar, total
        self.done: set[str] = set()

    def _advance(self, task_instance: Any) -> None:
        self.done.add(task_instance.task_id)
        self.progress.update(self.bar, completed=min(len(self.done), self.total))

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        """Show which task is running."""
        self.progress.update(self.bar, task=task_instance.task_id)

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        """Count a finished task."""
        self._advance(task_instance)

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        """Count a failed task (the run's state tells the story afterwards)."""
        self._advance(task_instance)

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        """Count a task that skipped itself."""
        self._advance(task_instance)


class Story:
    """Prints the demo's lines on the terminal and sends every other byte to per-step log files."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._terminal_fd = os.dup(1)
        self._stderr_fd = os.dup(2)
        self._terminal: TextIO = os.fdopen(self._terminal_fd, "w", buffering=1, encoding="utf-8")
        self.console = Console(file=self._terminal, highlight=False, soft_wrap=True)
        self._closed = False
        self._redirect(log_dir / "demo.log")

    def _redirect(self, path: Path) -> None:
        """Point descriptors 1 and 2 (and so Python's stdout/stderr) at `path`, appending."""
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def say(self, text: str) -> None:
        """One line of the story."""
        self.console.print(text)

    def log_path(self, step: str) -> Path:
        """The log file of one step."""
        return self.log_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', step)}.log"

    @contextmanager
    def step(self, step: str) -> Iterator[float]:
        """Send the output of one step to its own log file; yields its start time."""
        self._redirect(self.log_path(step))
        try:
            yield time.perf_counter()
        finally:
            self._redirect(self.log_dir / "demo.log")

    @contextmanager
    def dag_progress(self, label: str, total: int) -> Iterator[None]:
        """A progress bar over a DAG run's tasks while it runs (drawn on a terminal only)."""
        from airflow.sdk.listener import get_listener_manager

        if not self.console.is_terminal:  # a log or a pipe gets the step's one line, no bar frames
            yield
            return

        progress = Progress(
            SpinnerColumn(),
            TextColumn("  {task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("[dim]{task.fields[task]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            # Rich would swap sys.stdout/stderr for writers that print above the bar, putting the
            # task logs back on the terminal; descriptors 1 and 2 already go to the step's log.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        bar = progress.add_task(label, total=total, task="")
        listener = TaskProgress(progress, bar, total)
        manager = get_listener_manager()
        manager.add_listener(listener)
        try:
            with progress:
                yield
        finally:
            manager.pm.unregister(listener)

    def close(self) -> None:
        """Give the process its terminal back (once; safe after a broken pipe)."""
        if self._closed:
            return
        self._closed = True
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # e.g. `make demo | head` closed the pipe: restore the descriptors anyway
            pass
        os.dup2(self._terminal_fd, 1)
        os.dup2(self._stderr_fd, 2)
        os.close(self._stderr_fd)
        try:
            self._terminal.close()
        except OSError:
            pass


def seconds(started: float) -> str:
    """Elapsed time since `started`, as the story prints it."""
    took = round(time.perf_counter() - started)
    minutes, secs = divmod(took, 60)
    return f"{took} s" if took < 90 else f"{minutes} min {secs:02d} s"
