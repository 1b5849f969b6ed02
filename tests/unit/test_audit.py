"""tools/audit.py: the ignore file, stale and expired entries, the registry fallback, unreachable PyPI.

pip-audit's JSON is the recorded report in audit_data/; PyPI's project JSON is served by a real HTTP
server on loopback (AUDIT_PYPI_URL), so no test leaves the machine.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tools import audit

DATA = Path(__file__).parent / "audit_data"
LOCK = DATA / "lock.txt"
REPORT = DATA / "pip_audit_report.json"
TODAY = dt.date(2026, 12, 2)
# The three advisories of the recorded report, and the one the project JSON adds for urllib3.
ALL_FINDINGS = [
    ("CVE-2024-22195", "jinja2"),
    ("GHSA-h75v-3vvj-5mfj", "jinja2"),  # by its alias: an entry may name any of the ids
    ("CVE-2024-35195", "requests"),
    ("GHSA-v845-jxx5-vc9f", "urllib3"),
]


class _Registry(BaseHTTPRequestHandler):
    """PyPI's /pypi/<name>/json from the recorded project files; 404 for anything else."""

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        path = DATA / f"project_{parts[1]}.json" if len(parts) == 3 and parts[0] == "pypi" else None
        if path is None or not path.exists():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback registry serving the recorded project JSON; AUDIT_PYPI_URL points at it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AUDIT_PYPI_URL", url)
    monkeypatch.delenv("CI", raising=False)
    yield url
    server.shutdown()
    server.server_close()


def _ignore_file(tmp_path: Path, entries: list[dict]) -> Path:
    """Write an ignore file with these [[ignore]] entries (review_by a date or raw TOML text)."""
    lines = []
    for entry in entries:
        lines.append("[[ignore]]")
        for key, value in entry.items():
            lines.append(f"{key} = {value.isoformat() if isinstance(value, dt.date) else json.dumps(value)}")
    path = tmp_path / "audit-ignore.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _entry(advisory: str, package: str, review_by: dt.date = TODAY + dt.timedelta(days=30)) -> dict:
    """One well-formed ignore entry."""
    return {
        "id": advisory,
        "package": package,
        "reason": "not reachable from the bundle",
        "review_by": review_by,
    }


def _run(ignore: Path, *extra: str) -> int:
    """The audit over the recorded lock and report."""
    return audit.main([str(LOCK), "--report", str(REPORT), "--ignore-file", str(ignore), *extra], today=TODAY)


def test_a_finding_that_is_not_ignored_fails(
    registry: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ignore = _ignore_file(tmp_path, [_entry(a, p) for a, p in ALL_FINDINGS if p != "requests"])
    assert _run(ignore) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1
    assert "requests" in failing[0] and "2.31.0" in failing[0] and "CVE-2024-35195" in failing[0]
    assert "2.32.0" in failing[0], "the table names the fixed version"
    assert "audit: FAILED (1 un-ignored findings, 3 ignored, 0 ignore-file problems)" in out


def test_every_finding_ignored_with_a_reason_passes(
    registry: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ignore = _ignore_file(tmp_path, [_entry(a, p) for a, p in ALL_FINDINGS])
    assert _run(ignore) == 0
    out = capsys.readouterr().out
    ignored = [line for line in out.splitlines() if line.startswith("ignored")]
    assert len(ignored) == 4
    assert all("not reachable from the bundle" in line for line in ignored)
    assert "audit: passed (0 un-ignored findings, 4 ignored, 0 ignore-file problems)" in out


def test_no_ignore_file_fails_on_every_finding(registry: str, tmp_path: Path, capsys) -> None:
    assert _run(tmp_path / "absent.toml") == 1
    assert "audit: FAILED (4 un-ignored findings, 0 ignored" in capsys.readouterr().out


def test_an_expired_entry_fails_even_though_it_matches(registry: str, tmp_path: Path, capsys) -> None:
    entries = [_entry(a, p) for a, p in ALL_FINDINGS]
    entries[2] = _entry("CVE-2024-35195", "requests", review_by=TODAY - dt.timedelta(days=1))
    assert _run(_ignore_file(tmp_path, entries)) == 1
    out = capsys.readouterr().out
    assert "ignore entry 3 (CVE-2024-35195, requests): review_by 2026-12-01 has passed" in out


@pytest.mark.parametrize(
    ("stale", "message"),
    [
        (_entry("GHSA-0000-0000-0000", "jinja2"), "matches no finding any more"),
        (_entry("CVE-2024-35195", "flask"), "flask is in none of the locks"),
    ],
)
def test_a_stale_entry_fails(registry: str, tmp_path: Path, capsys, stale: dict, message: str) -> None:
    assert _run(_ignore_file(tmp_path, [*(_entry(a, p) for a, p in ALL_FINDINGS), stale])) == 1
    out = capsys.readouterr().out
    assert f"ignore entry 5 ({stale['id']}, {stale['package']}): " in out and message in out


def test_project_json_audits_a_skipped_pin_only_at_the_latest_release(registry: str, tmp_path: Path) -> None:
    report = json.loads(REPORT.read_text())
    projects = {"certifi": audit.fetch_project("certifi"), "urllib3": audit.fetch_project("urllib3")}
    result = audit.collect("lock.txt", audit.read_pins(LOCK), report, projects)
    assert result.audited == {"jinja2", "requests", "idna", "urllib3"}
    assert list(result.unaudited) == ["certifi"]
    assert "latest is 2026.10.19.post1" in result.unaudited["certifi"]
    urllib3 = [f for f in result.findings if f.package == "urllib3"]
    # The withdrawn advisory is left out; the active one keeps its alias and fixed versions.
    assert [(f.id, f.aliases, f.fix_versions, f.version) for f in urllib3] == [
        ("GHSA-v845-jxx5-vc9f", ("CVE-2023-43804",), ("1.26.17", "2.0.6"), "2.0.0")
    ]


def test_unaudited_pins_are_listed_and_fail_with_require_complete(
    registry: str, tmp_path: Path, capsys
) -> None:
    ignore = _ignore_file(tmp_path, [_entry(a, p) for a, p in ALL_FINDINGS] + [_entry("CVE-1", "certifi")])
    assert _run(ignore) == 0
    out = capsys.readouterr().out
    assert "NOT AUDITED: certifi==2026.10.18 (latest is 2026.10.19.post1" in out
    # An entry for a package that could not be audited is neither a match nor stale: it is unverified.
    assert "ignore entry 5 (CVE-1, certifi): certifi was not audited, so the entry is unverified" in out
    assert _run(ignore, "--require-complete") == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "CVE-1", "package": "requests", "review_by": TODAY}, "entry 1: missing keys ['reason']"),
        ({**_entry("CVE-1", "requests"), "reason": " "}, "entry 1: reason must be a non-empty string"),
        ({**_entry("CVE-1", "requests"), "until": TODAY}, "unknown keys ['until']"),
        (
            {**_entry("CVE-1", "requests"), "review_by": "soon"},
            "entry 1 (CVE-1): review_by must be a TOML date",
        ),
        (_entry("CVE-1", "requests", TODAY + dt.timedelta(days=181)), "is more than 180 days away"),
    ],
)
def test_a_malformed_entry_is_refused_by_file_and_entry(
    registry: str, tmp_path: Path, capsys, entry: dict, message: str
) -> None:
    ignore = _ignore_file(tmp_path, [entry])
    assert _run(ignore) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"AUDIT FAILED: {ignore}: [[ignore]] ") and message in err
    assert "Traceback" not in err


def test_a_duplicate_entry_and_bad_toml_are_refused(registry: str, tmp_path: Path, capsys) -> None:
    assert _run(_ignore_file(tmp_path, [_entry("CVE-1", "Requests"), _entry("cve-1", "requests")])) == 2
    assert "entry 2: cve-1 for requests twice" in capsys.readouterr().err
    (tmp_path / "broken.toml").write_text("[[ignore]\n")
    assert _run(tmp_path / "broken.toml") == 2
    assert "broken.toml: not valid TOML" in capsys.readouterr().err


def test_an_unpinned_lock_line_is_refused_with_its_line(registry: str, tmp_path: Path, capsys) -> None:
    lock = tmp_path / "requirements.txt"
    lock.write_text("idna==3.10\nrequests>=2.31\n")
    assert audit.main([str(lock), "--report", str(REPORT)], today=TODAY) == 2
    assert f"{lock}:2: not pinned with ==" in capsys.readouterr().err


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_registry_fails_under_ci_and_is_loud_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.setenv("AUDIT_PYPI_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("CI", "true")
    assert _run(tmp_path / "absent.toml") == 2
    err = capsys.readouterr().err
    assert err.startswith("AUDIT FAILED: PyPI's advisory data could not be reached: http://127.0.0.1:")
    monkeypatch.delenv("CI")
    assert _run(tmp_path / "absent.toml") == 0
    assert capsys.readouterr().err.startswith("AUDIT NOT RUN (this is not a pass): PyPI's advisory data")


def test_a_registry_without_data_for_any_pin_is_not_a_pass(
    registry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    # What pip-audit reports when every release JSON answers 404: all skipped, "No known vulnerabilities".
    report = tmp_path / "all_skipped.json"
    report.write_text(
        json.dumps({"dependencies": [{"name": "certifi", "skip_reason": "not found"}], "fixes": []})
    )
    lock = tmp_path / "requirements.txt"
    lock.write_text("certifi==2026.10.18\n")
    monkeypatch.setenv("CI", "true")
    assert audit.main([str(lock), "--report", str(report)], today=TODAY) == 2
    assert "served advisory data for none of the pins" in capsys.readouterr().err


def test_pip_audit_is_run_on_the_pinned_lock_without_resolving(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The real pip-audit, its PyPI traffic sent to a closed loopback proxy: it must get as far as asking
    # for the pinned release (flags accepted, no venv built, no resolver), and its failure is one line.
    proxy = f"http://127.0.0.1:{_closed_port()}"
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no cached answer from an earlier run
    lock = tmp_path / "requirements.txt"
    lock.write_text("idna==3.10\n")
    with pytest.raises(audit.AuditError) as failure:
        audit.run_pip_audit(lock, timeout=5)
    message = str(failure.value)
    assert message.startswith(f"pip-audit failed on {lock} (exit 1): ")
    assert "/pypi/idna/3.10/json" in message and "\n" not in message
