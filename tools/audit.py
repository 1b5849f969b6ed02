"""Audit the pinned locks against the advisory data PyPI serves, with a reviewed ignore file.

pip-audit (`-s pypi --no-deps --disable-pip`) audits each lock exactly as pinned, without building a
venv. Its JSON is checked against audit-ignore.toml: a finding that is not ignored fails, and so does an
ignore entry that has expired or no longer matches anything. A registry that cannot be reached fails
under CI=true and is reported loudly (never a silent pass) elsewhere.

Where the registry answers 404 for a release's own JSON (as a caching mirror may), the project JSON is
used instead: it carries the advisories of the latest release, so it audits a pin that is the latest.
Any other pin is listed as not audited.

    python tools/audit.py requirements.txt serving/requirements.txt [--ignore-file FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_IGNORE_FILE = Path(__file__).resolve().parents[1] / "audit-ignore.toml"
# A review-by date further out than this is a way to forget an advisory, so it is refused.
MAX_REVIEW_DAYS = 180
ENTRY_KEYS = {"id", "package", "reason", "review_by"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)")


class AuditError(Exception):
    """A problem that stops the audit: bad ignore file, bad lock, pip-audit failure."""


class RegistryUnreachable(AuditError):
    """PyPI could not be reached, so nothing was audited."""


@dataclass(frozen=True)
class Finding:
    """One advisory against one pinned package in one lock."""

    lock: str
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]
    description: str = ""

    def ids(self) -> set[str]:
        """The advisory id and its aliases, upper-cased for matching."""
        return {self.id.upper(), *(alias.upper() for alias in self.aliases)}


@dataclass(frozen=True)
class IgnoreEntry:
    """One reviewed exception from the ignore file."""

    number: int
    id: str
    package: str
    reason: str
    review_by: dt.date


@dataclass
class LockResult:
    """What auditing one lock found: findings, which pins were audited, which could not be."""

    lock: str
    findings: list[Finding] = field(default_factory=list)
    audited: set[str] = field(default_factory=set)
    unaudited: dict[str, str] = field(default_factory=dict)


@dataclass
class Verdict:
    """Findings split into failing and ignored, plus problems with the ignore file itself."""

    failing: list[Finding] = field(default_factory=list)
    ignored: list[tuple[Finding, IgnoreEntry]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def canonical(name: str) -> str:
    """The PEP 503 normalised form of a package name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(lock: Path) -> dict[str, str]:
    """Package name -> pinned version of a uv/pip-compile lock; every requirement must be pinned."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(lock.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = PIN.match(line)
        if match is None:
            raise AuditError(f"{lock}:{number}: not pinned with ==, so it cannot be audited exactly: {line}")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def _entry(path: Path, number: int, raw: object, today: dt.date) -> IgnoreEntry:
    """Validate one [[ignore]] table; errors name the file and the entry."""
    where = f"{path}: [[ignore]] entry {number}"
    if not isinstance(raw, dict):
        raise AuditError(f"{where}: must be a table")
    missing, unknown = ENTRY_KEYS - raw.keys(), raw.keys() - ENTRY_KEYS
    if missing or unknown:
        raise AuditError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    for key in ("id", "package", "reason"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise AuditError(f"{where}: {key} must be a non-empty string")
    review_by = raw["review_by"]
    if not isinstance(review_by, dt.date) or isinstance(review_by, dt.datetime):
        raise AuditError(f"{where} ({raw['id']}): review_by must be a TOML date such as 2027-01-31")
    if review_by > today + dt.timedelta(days=MAX_REVIEW_DAYS):
        raise AuditError(
            f"{where} ({raw['id']}): review_by {review_by} is more than {MAX_REVIEW_DAYS} days away"
        )
    return IgnoreEntry(number, raw["id"].strip(), canonical(raw["package"]), raw["reason"].strip(), review_by)


def load_ignores(path: Path, today: dt.date) -> list[IgnoreEntry]:
    """The validated entries of the ignore file; a missing file means no exceptions."""
    if not path.exists():
        return []
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise AuditError(f"{path}: not valid TOML: {error}") from None
    unknown = document.keys() - {"ignore"}
    if unknown:
        raise AuditError(f"{path}: unknown top-level keys {sorted(unknown)}; only [[ignore]] tables")
    raw_entries = document.get("ignore", [])
    if not isinstance(raw_entries, list):
        raise AuditError(f"{path}: ignore must be an array of tables, written [[ignore]]")
    entries = [_entry(path, number, raw, today) for number, raw in enumerate(raw_entries, start=1)]
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        key = (entry.package, entry.id.upper())
        if key in seen:
            raise AuditError(f"{path}: [[ignore]] entry {entry.number}: {entry.id} for {entry.package} twice")
        seen.add(key)
    return entries


def _vulns_to_findings(lock: str, package: str, version: str, vulns: Iterable[dict]) -> list[Finding]:
    """Findings from pip-audit's JSON vulns (id, aliases, fix_versions, description)."""
    return [
        Finding(
            lock=lock,
            package=package,
            version=version,
            id=str(vuln["id"]),
            aliases=tuple(vuln.get("aliases", ())),
            fix_versions=tuple(str(version) for version in vuln.get("fix_versions", ())),
            description=str(vuln.get("description", "")),
        )
        for vuln in vulns
    ]


def _project_vulns(project: dict, version: str) -> list[dict] | None:
    """pip-audit-style vulns of the pinned version from PyPI's project JSON; None if not the latest."""
    if str(project.get("info", {}).get("version")) != version:
        return None
    vulns = []
    for vuln in project.get("vulnerabilities") or []:
        if vuln.get("withdrawn") is not None:
            continue
        vulns.append(
            {
                "id": vuln["id"],
                "aliases": vuln.get("aliases", []),
                "fix_versions": vuln.get("fixed_in", []),
                "description": (vuln.get("summary") or vuln.get("details") or "").replace("\n", " "),
            }
        )
    return vulns


def skipped_names(report: dict) -> set[str]:
    """The packages pip-audit skipped (the registry had no JSON for that release)."""
    return {canonical(dep["name"]) for dep in report.get("dependencies", []) if "skip_reason" in dep}


def collect(lock: str, pins: dict[str, str], report: dict, projects: dict[str, dict | None]) -> LockResult:
    """Turn one pip-audit JSON report into findings, using the project JSON (by name) for skipped pins."""
    result = LockResult(lock)
    for dependency in report.get("dependencies", []):
        name = canonical(dependency["name"])
        if "skip_reason" in dependency:
            version = pins.get(name, "?")
            project = projects.get(name)
            vulns = None if project is None else _project_vulns(project, version)
            if vulns is None:
                latest = "not on PyPI" if project is None else f"latest is {project['info']['version']}"
                result.unaudited[name] = f"{version} ({latest}; no advisory data for this release here)"
                continue
        else:
            version, vulns = dependency["version"], dependency["vulns"]
        result.audited.add(name)
        result.findings += _vulns_to_findings(lock, name, version, vulns)
    return result


def evaluate(results: Sequence[LockResult], ignores: Sequence[IgnoreEntry], today: dt.date) -> Verdict:
    """Apply the ignore file: un-ignored findings, expired and stale entries are failures."""
    verdict = Verdict()
    used: set[int] = set()
    for result in results:
        for finding in result.findings:
            entry = next(
                (e for e in ignores if e.package == finding.package and e.id.upper() in finding.ids()), None
            )
            if entry is None:
                verdict.failing.append(finding)
            else:
                verdict.ignored.append((finding, entry))
                used.add(entry.number)
    audited = set().union(*(result.audited for result in results)) if results else set()
    pinned = audited | set().union(*(result.unaudited.keys() for result in results)) if results else set()
    for entry in ignores:
        label = f"ignore entry {entry.number} ({entry.id}, {entry.package})"
        if entry.review_by < today:
            verdict.problems.append(f"{label}: review_by {entry.review_by} has passed; review it again")
        if entry.number in used:
            continue
        if entry.package not in pinned:
            verdict.problems.append(f"{label}: {entry.package} is in none of the locks; remove the entry")
        elif entry.package in audited:
            verdict.problems.append(f"{label}: matches no finding any more (fixed?); remove the entry")
        else:
            verdict.notes.append(f"{label}: {entry.package} was not audited, so the entry is unverified")
    return verdict


def _row(status: str, finding: Finding, note: str) -> list[str]:
    """One table row."""
    fixed = ", ".join(finding.fix_versions) or "no fix yet"
    return [status, finding.lock, finding.package, finding.version, finding.id, fixed, note]


def render_table(verdict: Verdict) -> str:
    """A fixed-width table of every finding, failing ones first."""
    header = ["status", "lock", "package", "version", "advisory", "fixed in", "note"]
    rows = [_row("FAIL", f, (f.description or "")[:60]) for f in verdict.failing]
    rows += [_row("ignored", f, f"until {e.review_by}: {e.reason}"[:60]) for f, e in verdict.ignored]
    if not rows:
        return "No known vulnerabilities in the audited pins."
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def registry_url() -> str:
    """PyPI's base URL; AUDIT_PYPI_URL points the project-JSON look-ups elsewhere (tests use loopback)."""
    return os.environ.get("AUDIT_PYPI_URL", "https://pypi.org").rstrip("/")


def fetch_project(name: str, base_url: str | None = None, timeout: float = 30) -> dict | None:
    """PyPI's project JSON for a package, or None when the registry does not know it."""
    url = f"{base_url or registry_url()}/pypi/{name}/json"
    if not url.startswith(("https://", "http://")):
        raise AuditError(f"registry URL must be http(s): {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise RegistryUnreachable(f"{url} answered HTTP {error.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise RegistryUnreachable(f"{url}: {getattr(error, 'reason', error)}") from None


def run_pip_audit(lock: Path, timeout: float) -> dict:
    """pip-audit's JSON report for one lock, audited exactly as pinned (no resolver, no venv)."""
    command = [
        sys.executable, "-m", "pip_audit", "-s", "pypi", "--no-deps", "--disable-pip", "-r", str(lock),
        "-f", "json", "--aliases", "on", "--desc", "on", "--progress-spinner", "off",
        "--timeout", str(int(timeout)),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AuditError(f"pip-audit failed on {lock} (exit {done.returncode}): {last}") from None


def _is_ci() -> bool:
    """True when running under CI (CI=true), where an unreachable registry is a failure."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("locks", nargs="+", type=Path, help="pinned requirements files")
    parser.add_argument("--ignore-file", type=Path, default=DEFAULT_IGNORE_FILE)
    parser.add_argument(
        "--report", type=Path, action="append", default=[],
        help="a saved pip-audit JSON report to use instead of running pip-audit, one per lock, in order",
    )  # fmt: skip
    parser.add_argument(
        "--require-complete", action="store_true", help="fail when a pin could not be audited"
    )
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args(argv)
    if args.report and len(args.report) != len(args.locks):
        parser.error(f"--report given {len(args.report)} times for {len(args.locks)} locks")
    return args


def _audit(args: argparse.Namespace, today: dt.date) -> tuple[list[LockResult], list[IgnoreEntry]]:
    """Run (or read) pip-audit for every lock and collect the results."""
    ignores = load_ignores(args.ignore_file, today)
    pins = {str(lock): read_pins(lock) for lock in args.locks}
    fetch_project("pip", timeout=args.timeout)  # one cheap look-up: is the registry there at all?
    if args.report:
        reports = [json.loads(path.read_text()) for path in args.report]
    else:
        with ThreadPoolExecutor(max_workers=len(args.locks)) as pool:
            reports = list(pool.map(lambda lock: run_pip_audit(lock, args.timeout), args.locks))
    names = sorted(set().union(*(skipped_names(report) for report in reports)))
    with ThreadPoolExecutor(max_workers=8) as pool:
        fetched = pool.map(lambda name: fetch_project(name, timeout=args.timeout), names)
        projects = dict(zip(names, fetched, strict=True))
    results = [
        collect(str(lock), pins[str(lock)], rep, projects)
        for lock, rep in zip(args.locks, reports, strict=True)
    ]
    if not any(result.audited for result in results):
        raise RegistryUnreachable("the registry answered but served advisory data for none of the pins")
    return results, ignores


def _report(results: Sequence[LockResult], verdict: Verdict, require_complete: bool) -> int:
    """Print the table and the summary; the exit code."""
    print(render_table(verdict))
    unaudited = sorted({f"{name}=={why}" for result in results for name, why in result.unaudited.items()})
    audited = set().union(*(result.audited for result in results))
    print(f"\nAudited {len(audited)} packages in {len(results)} locks; {len(unaudited)} not audited.")
    for line in unaudited:
        print(f"  NOT AUDITED: {line}")
    for note in verdict.notes:
        print(f"  note: {note}")
    for problem in verdict.problems:
        print(f"  IGNORE FILE: {problem}")
    failed = bool(verdict.failing or verdict.problems or (require_complete and unaudited))
    print(f"audit: {'FAILED' if failed else 'passed'} ({len(verdict.failing)} un-ignored findings, "
          f"{len(verdict.ignored)} ignored, {len(verdict.problems)} ignore-file problems)")  # fmt: skip
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None, today: dt.date | None = None) -> int:
    """Run the audit; 0 passed, 1 findings or ignore-file problems, 2 could not audit."""
    args = _parse_args(argv)
    today = today or dt.date.today()
    try:
        results, ignores = _audit(args, today)
    except RegistryUnreachable as error:
        banner = "AUDIT FAILED" if _is_ci() else "AUDIT NOT RUN (this is not a pass)"
        print(f"{banner}: PyPI's advisory data could not be reached: {error}", file=sys.stderr)
        return 2 if _is_ci() else 0
    except (AuditError, OSError, json.JSONDecodeError) as error:
        print(f"AUDIT FAILED: {error}", file=sys.stderr)
        return 2
    return _report(results, evaluate(results, ignores, today), args.require_complete)


if __name__ == "__main__":
    sys.exit(main())
