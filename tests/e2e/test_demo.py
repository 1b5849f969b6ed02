"""`make demo` as a newcomer meets it: a short story, a real alert email, one page that works.

The demo runs once, in a subprocess with its own data, reports, registry and Airflow home, exactly
as `make demo` runs it. Headless Chromium then opens `reports/index.html` from disk, as a person
would, and the test checks that every link, image and frame on it resolves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

pytestmark = pytest.mark.slow
PROJECT_DIR = Path(__file__).resolve().parents[2]
MAX_LINES = 60
# Runs in the page's folder with file access: reads index.html's DOM as the browser loaded it.
PROBE = """<!doctype html><html><body><iframe id="page" src="index.html" width="1400" height="2000"></iframe>
<script>
document.getElementById("page").onload = () => {
  const d = document.getElementById("page").contentDocument;
  const result = {
    title: d.title,
    images: [...d.images].map(i => [i.getAttribute("src"), i.complete && i.naturalWidth > 0]),
    links: [...d.querySelectorAll("a[href]")].map(a => a.getAttribute("href")),
    frames: [...d.querySelectorAll("iframe")].map(f => [f.getAttribute("src"),
      !!(f.contentDocument && f.contentDocument.body && f.contentDocument.body.textContent.trim())]),
    ids: [...d.querySelectorAll("[id]")].map(e => e.id),
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
};
</script></body></html>"""


@dataclass(frozen=True)
class Demo:
    """One finished demo run: what it printed and where it wrote."""

    stdout: str
    stderr: str
    returncode: int
    home: Path

    @property
    def reports(self) -> Path:
        return self.home / "reports"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`python -m tabular_mlops.demo` in a home of its own (the same command `make demo` runs)."""
    home = tmp_path_factory.mktemp("demo")
    # As a shell that ran `make demo` would have it: none of the test session's Airflow, MLflow or
    # bundle settings (unit-test mode, a signing key), only this run's folders. The online-store
    # prefix stays the session's, so the session's cleanup removes the demo's Redis keys too.
    keep = ("MLOPS_ONLINE_STORE_PREFIX",)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "MLOPS_")) or k in keep
    }
    env.update(
        MLOPS_DATA_DIR=str(home / "data"),
        MLOPS_REPORTS_DIR=str(home / "reports"),
        MLOPS_MLFLOW_DIR=str(home / "mlruns"),
        AIRFLOW_HOME=str(home / "airflow"),
        COLUMNS="120",
    )
    result = subprocess.run(
        [sys.executable, "-m", "tabular_mlops.demo"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    yield Demo(result.stdout, result.stderr, result.returncode, home)


def test_the_demo_tells_the_story_briefly(demo: Demo) -> None:
    """Under 60 lines, no library noise, every step said once; the logs are in files it names."""
    assert demo.returncode == 0, demo.stdout[-3000:]
    lines = demo.stdout.splitlines()
    assert len(lines) < MAX_LINES, demo.stdout
    assert demo.stderr.strip() == "", demo.stderr[-2000:]
    for noise in ("Traceback", "WARNING", "[DAG TEST]", "Downloading artifacts", "CloudPickle", "it/s]"):
        assert noise not in demo.stdout, noise
    logs = demo.reports / "demo" / "logs"
    assert str(logs) in demo.stdout
    assert (logs / "churn_training.log").stat().st_size > 0
    for model in ("churn", "credit_risk"):
        assert f"✓ {model}_training" in demo.stdout
        assert f"{model} day 1" in demo.stdout and f"{model} day 2" in demo.stdout
    assert "gate passed" in demo.stdout and "monitoring BREACH" in demo.stdout


def test_day_two_ends_in_a_real_alert_email(demo: Demo) -> None:
    """Both drifted days reach the SMTP sink as alerts from the configured sender, with the report."""
    mails = [
        message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in (demo.reports / "mail").glob("*.eml")
    ]
    alerts = [m for m in mails if str(m["Subject"]).startswith(("churn:", "credit_risk:"))]
    subjects = sorted(str(m["Subject"]) for m in alerts)
    assert any(s.startswith("churn:") for s in subjects), subjects
    assert any(s.startswith("credit_risk:") for s in subjects), subjects
    sender = yaml.safe_load((PROJECT_DIR / "include/configs/churn.yaml").read_text())["alerts"]["sender"]
    for mail in alerts:
        assert mail["From"] == sender
        names = {part.get_filename() for part in mail.iter_attachments()}
        assert "report.html" in names, names
    assert demo.stdout.count("→ alert email: ") == 2, demo.stdout


def _probe(chromium: str, page: Path, profile: Path) -> dict:
    """What Chromium loaded of the page: its images, links, frames and element ids."""
    probe = page.parent / "_probe.html"
    probe.write_text(PROBE)
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",  # the test may run as root; the page is our own file
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--allow-file-access-from-files",  # the probe reads the page's DOM in its frame
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
        "--dump-dom",
        probe.as_uri(),
    ]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink()
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0]
    return json.loads(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def test_every_link_and_image_on_the_page_resolves(demo: Demo, chromium: str, tmp_path: Path) -> None:
    """The page as Chromium renders it: each image decodes, each frame has content, each link exists."""
    page = demo.reports / "index.html"
    seen = _probe(chromium, page, tmp_path / "profile")
    assert seen["title"] == "tabular-mlops demo"
    assert len(seen["images"]) >= 12, seen["images"]  # six evaluation plots per model
    assert all(loaded for _, loaded in seen["images"]), [src for src, ok in seen["images"] if not ok]
    assert seen["frames"] and all(ok for _, ok in seen["frames"]), seen["frames"]
    for href in seen["links"]:
        parsed = urlparse(href)
        assert parsed.scheme in ("", "file"), href  # nothing on the page needs a network
        if not parsed.path:
            assert parsed.fragment in seen["ids"], href
            continue
        assert (page.parent / unquote(parsed.path)).resolve().exists(), href
    text = page.read_text()
    for must in ("report.html", "model_card.md", "predictions.parquet", "make airflow", "mlflow ui"):
        assert must in text, must
    shot = tmp_path / "index.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p2'}",
         "--window-size=1280,1800", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
