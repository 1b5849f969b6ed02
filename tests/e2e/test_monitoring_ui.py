"""Evidently's UI draws the monitoring dashboard: a real `evidently ui` on loopback, seen by Chromium.

The workspace holds four weeks of credit_risk windows recorded through monitoring_workspace: the
real window report (drift_report.run_report) on generated rows, steady for a fortnight, then a
drift that builds until the days breach and alerts go out; labels arrive a week late. Chromium
renders the project's dashboard page (a JavaScript app) and the test reads the drawn charts from
the DOM.
With MLOPS_UPDATE_SCREENSHOTS=1 the screenshot also replaces docs/images/monitoring-dashboard.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tabular_mlops import monitoring_workspace as mw
from tabular_mlops.config import ModelConfig, load_model_configs
from tabular_mlops.drift_report import LABEL, Figures

from tests.helpers import free_port, wait_until_ok
from tests.monitoring_windows import generated_rows, trained_version, window_report

BIN = Path(sys.executable).parent
PROJECT_DIR = Path(__file__).resolve().parents[2]
SCREENSHOT = PROJECT_DIR / "docs" / "images" / "monitoring-dashboard.png"
FIRST_DAY = date(2025, 6, 2)
DAYS = 28
LABEL_DELAY = 7  # days before a window's outcomes are known
DRIFT_FROM = 12  # the first day the population moves; it moves further every day after
VERSION = "3"
IMPORTANCE = {
    "utilisation": 0.35,
    "income": 0.2,
    "channel": 0.15,
    "age": 0.1,
    "tenure": 0.1,
    "enquiries": 0.1,
}
WINDOW = "1400,2080"


@dataclass(frozen=True)
class Day:
    """One window: its report run and the tags monitoring gives it afterwards."""

    day: date
    snapshot: Any
    figures: Figures
    tags: tuple[str, ...]


@pytest.fixture(scope="module")
def storyline() -> tuple[ModelConfig, list[Day], Day]:
    """Four weeks of report runs, made once: a fortnight of noise, then a drift that grows every
    day; and a retry of the sixth day (other rows, drifted), for the test of a day recorded again."""
    config = load_model_configs()["credit_risk"]
    rng = np.random.default_rng(20250602)
    version = trained_version(rng, IMPORTANCE, 5000)

    def run(day: date, current: pd.DataFrame) -> tuple[Any, Figures]:
        return window_report(config.monitoring, config.name, day, VERSION, version, current)

    windows, last_alert = [], -99
    for offset in range(DAYS):
        day = FIRST_DAY + timedelta(days=offset)
        weekend = day.weekday() >= 5
        rows = int(rng.normal(2_400 if weekend else 4_000, 150))
        current = generated_rows(rng, rows, drift=min(1.0, max(0, offset - DRIFT_FROM) / 15))
        if offset >= DAYS - LABEL_DELAY:
            current[LABEL] = np.nan  # outcomes not known yet
        snapshot, figures = run(day, current)
        breach = bool(figures.breaches)
        # This fixture's own alert rule: the first day of a breach, then every third day it lasts.
        alert = breach and offset - last_alert >= 3
        last_alert = offset if alert else last_alert
        tags = ((mw.BREACH_TAG,) if breach else ()) + ((mw.ALERT_SENT_TAG,) if alert else ())
        windows.append(Day(day, snapshot, figures, tags))
    retry_day = windows[5].day
    retry = run(retry_day, generated_rows(rng, 3_000, drift=1.0))
    return config, windows, Day(retry_day, *retry, tags=windows[5].tags)


def _record(config: ModelConfig, window: Day) -> None:
    """File the window as monitoring does: the report's snapshot, then its tags."""
    mw.record_window(config, window.snapshot, window.day)
    if window.tags:
        mw.tag_window(config, window.day, *window.tags)


@pytest.fixture
def recorded(
    storyline: tuple[ModelConfig, list[Day], Day], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ModelConfig, list[Day]]:
    """The storyline recorded in a fresh workspace, the way monitoring records each window."""
    monkeypatch.setenv("MLOPS_EVIDENTLY_WORKSPACE", str(tmp_path / "evidently"))
    config, windows, _retry = storyline
    for window in windows:
        _record(config, window)
    return config, windows


@pytest.fixture
def evidently_ui(recorded: Any, tmp_path: Path) -> Iterator[str]:
    """`evidently ui` on a free loopback port over the workspace; stopped at the end of the test."""
    port = free_port()
    log = (tmp_path / "evidently-ui.log").open("w")
    env = {**os.environ, "DO_NOT_TRACK": "1"}  # no usage telemetry from a test
    argv = [str(BIN / "evidently"), "ui", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*argv, "--workspace", mw.workspace_location()], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ok(f"{url}/api/version", process, timeout=120)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\n{(tmp_path / 'evidently-ui.log').read_text()[-3000:]}") from exc
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _render(chromium: str, url: str, tmp_path: Path, *output: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on the page, animations off, given time to fetch and draw the panels."""
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",  # the test may run as root; the page is our own, on loopback
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-prefers-reduced-motion",  # the charts are drawn at once, not animated in
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={WINDOW}",
        "--virtual-time-budget=20000",
        *output,
        url,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _series(url: str, project_id: Any, metric: str) -> dict[str, Any]:
    """The UI's own answer to a panel asking for one metric (the request its dashboard page sends)."""
    body = {"series_filter": [{"metric": metric, "tags": [], "metadata": {}, "metric_labels": {}}]}
    request = urllib.request.Request(  # noqa: S310 - the loopback server this test started
        f"{url}/api/v2/snapshots/{project_id}/data_series_batch",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback server
        return json.loads(response.read())


def test_the_dashboard_draws_the_monitoring_trends(
    chromium: str, evidently_ui: str, recorded: Any, tmp_path: Path
) -> None:
    config, windows = recorded
    project_id = mw.project(config).id
    page = f"{evidently_ui}/projects/{project_id}"
    dom = _render(chromium, page, tmp_path, "--dump-dom").stdout

    for title in ["Drifted features, weighted by importance", "Rows scored per day", "Alert emails sent"]:
        assert title in dom, f"panel {title!r} not rendered"
    # MUI X Charts draws each line series as one SVG path through every point it has.
    lines = re.findall(r'<path[^>]*\bd="([^"]+)"[^>]*class="MuiLineElement-root', dom)
    points = [len(re.findall(r"[MLC]", d)) for d in lines]
    # drift share, prediction PSI, estimated and realised AUC: one line each, every window drawn
    assert len(lines) == 4 and min(points) >= DAYS - LABEL_DELAY, points
    bars = re.findall(r'<path[^>]*class="[^"]*MuiBarElement-root', dom) + re.findall(
        r'<rect[^>]*class="[^"]*MuiBarElement-root', dom
    )
    assert len(bars) == DAYS, "one bar of rows per window"
    counters = re.findall(r'<h2[^>]*class="[^"]*MuiTypography-h2[^"]*"[^>]*>([^<]+)</h2>', dom)
    breached = sum(mw.BREACH_TAG in w.tags for w in windows)
    alerted = sum(mw.ALERT_SENT_TAG in w.tags for w in windows)
    assert 0 < alerted < breached
    assert counters == [str(breached), str(alerted)], counters

    shot = tmp_path / "dashboard.png"
    _render(chromium, page, tmp_path, f"--screenshot={shot}")
    from matplotlib.image import imread

    assert imread(shot).shape[:2] == (2080, 1400)
    if os.environ.get("MLOPS_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_a_day_recorded_again_reaches_the_running_ui(
    evidently_ui: str, recorded: Any, storyline: tuple[ModelConfig, list[Day], Day]
) -> None:
    config, windows = recorded
    project_id = mw.project(config).id
    metric = mw.metric_type("WeightedDriftShare")
    before = _series(evidently_ui, project_id, metric)["series"][0]["values"]
    assert before == pytest.approx([w.figures.weighted_drift_share for w in windows])

    # The day is scored again (a retry on other rows) with other figures: the UI shows them
    # without a restart.
    retry = storyline[2]
    expected = retry.figures.weighted_drift_share
    assert expected != pytest.approx(before[5])
    _record(config, retry)
    deadline = time.monotonic() + 20
    while (now := _series(evidently_ui, project_id, metric)["series"][0]["values"])[5] != pytest.approx(
        expected
    ):
        assert time.monotonic() < deadline, f"the UI still shows {now[5]} for the re-recorded day"
        time.sleep(0.5)
    assert len(now) == DAYS and now[:5] == pytest.approx(before[:5]) and now[6:] == pytest.approx(before[6:])
