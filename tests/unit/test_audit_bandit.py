"""ruff's bandit rules (S) are on for the code, and every suppression in the code says why."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"
CODE_DIRS = ["dags", "plugins", "serving", "benchmarks", "tools"]
# `# noqa: S608 - <reason>`: one or more codes, then a dash and the reason.
NOQA_S = re.compile(r"#\s*noqa:\s*(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)(?P<rest>.*)$")
PROBE = """import subprocess


def run(table: str, argv: list[str]) -> None:
    assert table
    subprocess.run(argv)
    print(f"SELECT * FROM {table}")
"""


def _ruff_codes(filename: str) -> set[str]:
    """The rule codes the project's ruff config reports for PROBE, linted as if it lived at filename."""
    done = subprocess.run(
        [str(RUFF), "check", "--no-cache", "--output-format", "json", "--stdin-filename", filename, "-"],
        input=PROBE,
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return {diagnostic["code"] for diagnostic in json.loads(done.stdout)}


def test_bandit_rules_apply_to_code() -> None:
    assert {"S101", "S603", "S608"} <= _ruff_codes("plugins/tabular_mlops/probe.py")


def test_tests_ignore_only_the_justified_bandit_rules() -> None:
    codes = _ruff_codes("tests/unit/probe.py")
    assert not codes & {"S101", "S603", "S608"}


@pytest.mark.parametrize("folder", CODE_DIRS)
def test_every_bandit_suppression_in_code_gives_a_reason(folder: str) -> None:
    unexplained = []
    for path in sorted((PROJECT / folder).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = NOQA_S.search(line)
            if match and any(code.strip().startswith("S") for code in match["codes"].split(",")):
                if not re.match(r"\s+-\s+\S", match["rest"]):
                    unexplained.append(f"{path.relative_to(PROJECT)}:{number}: {line.strip()}")
    assert not unexplained, "a `# noqa: S...` needs ' - <reason>':\n" + "\n".join(unexplained)
