"""The demo's page and voice: hostile values stay text, and task output never reaches the terminal."""

from __future__ import annotations

import os
import pty
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest
from tabular_mlops.demo_facts import DayFacts, ModelOutcome, TrainingFacts
from tabular_mlops.demo_page import write_index

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _facts(tmp_path: Path) -> ModelOutcome:
    """One model's outcome whose every data-borne text carries markup."""
    evaluation = tmp_path / "reports" / "evaluation" / "churn" / "run"
    evaluation.mkdir(parents=True)
    (evaluation / "model_card.md").write_text(
        f"# card\n\n{HOSTILE}\n\n| a | b |\n|---|---|\n| {HOSTILE} | 1 |\n"
    )
    quarantine = tmp_path / "data" / "quarantine" / "churn" / "run"
    quarantine.mkdir(parents=True)
    (quarantine / "customers.csv").write_text(
        f'source_file,line,reasons,raw_row\nf.csv,3,"{HOSTILE.replace(chr(34), "")}",x\n'
    )
    training = TrainingFacts(
        model="churn",
        evaluation_dir=evaluation,
        metrics={"roc_auc": 0.8},
        gate={
            "passed": False,
            "checks": [{"name": HOSTILE, "value": HOSTILE, "bound": 0.8, "passed": False}],
        },
        registered_name=HOSTILE,
        version="1",
        production=HOSTILE,
        quarantine_dir=quarantine,
        quarantined=1,
    )
    summary = {"breach": True, "headline": HOSTILE, "reasons": [HOSTILE], "weighted_drift_share": HOSTILE}
    days = [
        DayFacts(model="churn", day=date(2026, 12, 3), drifted=False, summary=summary),
        DayFacts.failed("churn", date(2026, 12, 4), True, HOSTILE),
    ]
    return ModelOutcome("churn", training="success", facts=training, days=days)


def test_values_from_data_never_become_markup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gate details, card text, quarantined rows, summaries and errors are shown as text."""
    monkeypatch.setenv("MLOPS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    page = write_index([_facts(tmp_path)], {HOSTILE: HOSTILE}).read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert page.count("&lt;script&gt;") >= 8  # each value is still there, as text
    assert "<table>" in page  # the card's own Markdown table still renders


def test_task_output_goes_to_the_step_log_even_under_a_progress_bar(tmp_path: Path) -> None:
    """On a real terminal (a pty), print() and warnings inside a step land in its log file only."""
    script = textwrap.dedent(
        f"""
        import warnings
        from pathlib import Path
        from tabular_mlops.demo_console import Story
        story = Story(Path({str(tmp_path / "logs")!r}))
        assert story.console.is_terminal
        with story.step("s1"), story.dag_progress("a_dag", 2):
            print("task-output-line")
            warnings.warn("task-warning-line")
        story.say("story-line")
        story.close()
        """
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: a process whose stdout is a terminal, as under `make demo`
        os.execve(sys.executable, [sys.executable, "-c", script], dict(os.environ, TERM="xterm"))  # noqa: S606 - this interpreter, fixed argv
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    terminal = seen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, terminal
    assert "story-line" in terminal
    assert "task-output-line" not in terminal and "task-warning-line" not in terminal, terminal
    log = (tmp_path / "logs" / "s1.log").read_text()
    assert "task-output-line" in log and "task-warning-line" in log
