"""A partition publish cut short at every step: readers see a whole partition or skip it, a re-run recovers.

Locally a subprocess doing the publish is SIGKILLed at each step (storage.FAULT_HOOK); on S3
(moto's server on loopback) the publish is stopped at each step. The reader is monitoring's
`latest_partition` plus the files its manifest lists, as `measure` reads them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tabular_mlops import storage

CONN = "aws_default"
DAY, EARLIER = "dt=2026-11-20", "dt=2026-11-19"
FILES = ["predictions.parquet", "rejects.csv"]
KILL_AT = """
import os, signal, sys
from pathlib import Path
from tabular_mlops import storage

step = sys.argv[3]
storage.FAULT_HOOK = lambda at: os.kill(os.getpid(), signal.SIGKILL) if at == step else None
storage.replace_partition(Path(sys.argv[1]), sys.argv[2], "aws_default")
"""


def _version(folder: Path, run_id: str) -> Path:
    """A partition whose every file holds its run id, with a manifest of the bundle listing them."""
    folder.mkdir(parents=True)
    for name in FILES:
        (folder / name).write_text(run_id)
    manifest = {"model": "churn", "model_version": "1", "run_id": run_id, "published_at": "2026-11-21"}
    (folder / storage.MANIFEST).write_text(json.dumps({**manifest, "output": {"files": FILES}}))
    return folder


def _seen(lake: str) -> tuple[str, str] | None:
    """(partition day, run id) of what a reader finds newest; AssertionError on a mixed partition."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import MonitoringError, latest_partition

    try:
        location = latest_partition(get_model_config("churn"))
    except MonitoringError:
        return None
    read = _read_s3 if storage.is_s3(lake) else lambda path: Path(path).read_text()
    while True:
        manifest = read(storage.join(location, storage.MANIFEST))
        record = json.loads(manifest)
        contents = {name: read(storage.join(location, name)) for name in record["output"]["files"]}
        # A reader spanning a republish reads the manifest again: unchanged, what it read is one version.
        if read(storage.join(location, storage.MANIFEST)) == manifest:
            break
    assert set(contents.values()) == {record["run_id"]}, f"{location} mixes versions: {contents}"
    return location.rpartition("/")[2], record["run_id"]


def _read_s3(location: str) -> str:
    bucket, key = storage.split_s3(location)
    return storage.s3_hook(CONN).read_key(key, bucket_name=bucket)


@pytest.fixture
def local_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lake holding an earlier day and version r1 of the day under test."""
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "lake"))
    predictions = tmp_path / "lake" / "predictions" / "churn"
    storage.replace_partition(_version(tmp_path / "v0", "r0"), str(predictions / EARLIER), CONN)
    storage.replace_partition(_version(tmp_path / "v1", "r1"), str(predictions / DAY), CONN)
    return predictions


@pytest.mark.parametrize(("step", "expected"), [("copied", "r1"), ("swapped", "r2")])
def test_a_local_publish_killed_at_each_step_leaves_a_whole_partition_and_a_rerun_cleans_up(
    local_lake: Path, tmp_path: Path, step: str, expected: str
) -> None:
    target = local_lake / DAY
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT, str(_version(tmp_path / "v2", "r2")), str(target), step],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _seen(str(local_lake)) == (DAY, expected)  # the old partition or the new one, never neither
    storage.replace_partition(_version(tmp_path / "v3", "r3"), str(target), CONN)
    assert _seen(str(local_lake)) == (DAY, "r3")
    assert sorted(p.name for p in local_lake.iterdir()) == [EARLIER, DAY]  # the dead try's scratch swept
    assert sorted(p.name for p in target.iterdir()) == sorted([*FILES, storage.MANIFEST])


class _Stop(Exception):
    """Raised by the fault hook: the S3 publish stops where a crash would have stopped it."""


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("claimed", (DAY, "r1")),
        ("unmarked", (EARLIER, "r0")),  # no manifest: the half-published day is skipped
        ("cleared", (EARLIER, "r0")),
        ("uploaded", (EARLIER, "r0")),
        ("marked", (DAY, "r2")),
    ],
)
def test_an_s3_publish_stopped_at_each_step_is_whole_or_skipped_and_a_rerun_recovers(
    bucket: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, expected: tuple
) -> None:
    lake = f"s3://{bucket}/publish-{step}"
    monkeypatch.setenv("MLOPS_LAKE", lake)
    predictions = storage.join(lake, "predictions", "churn")
    storage.replace_partition(_version(tmp_path / "v0", "r0"), storage.join(predictions, EARLIER), CONN)
    target = storage.join(predictions, DAY)
    storage.replace_partition(_version(tmp_path / "v1", "r1"), target, CONN)

    def stop(at: str) -> None:
        if at == step:
            raise _Stop(at)

    monkeypatch.setattr(storage, "FAULT_HOOK", stop)
    with pytest.raises(_Stop):
        storage.replace_partition(_version(tmp_path / "v2", "r2"), target, CONN)
    assert _seen(lake) == expected
    monkeypatch.setattr(storage, "FAULT_HOOK", None)
    storage.replace_partition(_version(tmp_path / "v3", "r3"), target, CONN)
    assert _seen(lake) == (DAY, "r3")
    assert storage.list_files(target, CONN) == sorted([storage.MANIFEST, *FILES])  # no claim left behind
