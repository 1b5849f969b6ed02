"""Destructive writes are confined: publishing and deleting touch only what the bundle wrote, and
user-given locations must lie under the allowed roots (the lake plus scoring.allowed_locations)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from tabular_mlops import storage
from tabular_mlops.config import ConfigError, get_model_config
from tabular_mlops.scoring import allowed_roots, checked_location

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONN = "aws_default"


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under a folder, by relative path (symlinks by their target text)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            out[path.relative_to(folder).as_posix()] = "link:" + os.readlink(path)
        elif path.is_file():
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _manifest(files: list[str], run_id: str = "r1") -> str:
    """A manifest with the fields scoring.publish writes."""
    record = {"model": "churn", "model_version": "3", "run_id": run_id, "published_at": "2026-11-20T02:00:00"}
    return json.dumps({**record, "output": {"location": "somewhere", "files": files}})


def _new_partition(folder: Path, run_id: str = "r2") -> Path:
    folder.mkdir(parents=True)
    (folder / "predictions.parquet").write_bytes(b"new predictions " + run_id.encode())
    (folder / "rejects.csv").write_text("table,source_file,line,reasons,raw_row\n")
    (folder / "_manifest.json").write_text(_manifest(["predictions.parquet", "rejects.csv"], run_id))
    return folder


def _foreign_folder(folder: Path) -> Path:
    """A folder like someone's MLflow artifacts or home: nothing of the bundle's."""
    (folder / "1" / "abc123" / "artifacts").mkdir(parents=True)
    (folder / "1" / "abc123" / "artifacts" / "model.pkl").write_bytes(os.urandom(256))
    (folder / "1" / "meta.yaml").write_text("name: experiment 1\n")
    (folder / "notes.txt").write_text("keep me")
    return folder


def test_publishing_over_foreign_files_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    target = _foreign_folder(tmp_path / "lake" / "mlruns")
    before = _snapshot(tmp_path / "lake")
    with pytest.raises(storage.UnsafeTarget) as refused:
        storage.replace_partition(_new_partition(tmp_path / "new"), str(target), CONN)
    message = str(refused.value)
    assert str(target) in message and "no manifest of this bundle" in message
    assert "1/abc123/artifacts/model.pkl" in message and "notes.txt" in message
    assert _snapshot(tmp_path / "lake") == before  # byte-identical, and no temporary folder beside it
    assert sorted(p.name for p in target.parent.iterdir()) == ["mlruns"]


def test_a_manifest_that_is_not_ours_or_does_not_list_everything_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "predictions" / "churn"
    target.mkdir(parents=True)
    (target / "_manifest.json").write_text(json.dumps({"name": "someone else's manifest"}))
    with pytest.raises(storage.UnsafeTarget, match="_manifest.json"):
        storage.delete_tree(str(target), CONN)
    # Our manifest one level up must not doom the daily partitions below it.
    (target / "_manifest.json").write_text(_manifest(["predictions.parquet"]))
    (target / "predictions.parquet").write_text("old")
    _new_partition(target / "dt=2026-11-20")
    before = _snapshot(target)
    with pytest.raises(storage.UnsafeTarget, match="does not list everything.*dt=2026-11-20/_manifest.json"):
        storage.replace_partition(_new_partition(tmp_path / "new"), str(target), CONN)
    assert _snapshot(target) == before


def test_republish_over_our_own_partition_and_into_an_empty_target(tmp_path: Path) -> None:
    target = tmp_path / "lake" / "dt=2026-11-20"
    storage.replace_partition(_new_partition(tmp_path / "first", "r1"), str(target), CONN)  # absent
    assert (target / "predictions.parquet").read_bytes() == b"new predictions r1"
    (target / "inputs.parquet").unlink(missing_ok=True)
    storage.replace_partition(_new_partition(tmp_path / "second", "r2"), str(target), CONN)
    assert (target / "predictions.parquet").read_bytes() == b"new predictions r2"
    assert sorted(p.name for p in target.parent.iterdir()) == ["dt=2026-11-20"]
    empty = tmp_path / "lake" / "dt=2026-11-21"
    empty.mkdir()
    storage.replace_partition(_new_partition(tmp_path / "third", "r3"), str(empty), CONN)
    assert json.loads((empty / "_manifest.json").read_text())["run_id"] == "r3"


def test_a_target_that_is_a_symlink_or_holds_one_is_refused(tmp_path: Path) -> None:
    victim = _foreign_folder(tmp_path / "victim")
    before = _snapshot(victim)
    (tmp_path / "lake").mkdir()
    link = tmp_path / "lake" / "dt=2026-11-20"
    link.symlink_to(victim, target_is_directory=True)
    with pytest.raises(storage.UnsafeTarget, match="it is a symlink"):
        storage.replace_partition(_new_partition(tmp_path / "new"), str(link), CONN)
    # A symlinked folder inside an otherwise empty target is an entry of its own, not walked into.
    holder = tmp_path / "lake" / "dt=2026-11-21"
    holder.mkdir()
    (holder / "escape").symlink_to(victim, target_is_directory=True)
    with pytest.raises(storage.UnsafeTarget, match="escape"):
        storage.delete_tree(str(holder), CONN)
    assert _snapshot(victim) == before and link.is_symlink() and (holder / "escape").is_symlink()


def test_a_symlinked_manifest_claims_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "real_manifest.json").write_text(_manifest(["data.csv"]))
    target = tmp_path / "lake" / "dt=2026-11-20"
    target.mkdir(parents=True)
    (target / "data.csv").write_text("someone's data")
    (target / "_manifest.json").symlink_to(victim / "real_manifest.json")
    with pytest.raises(storage.UnsafeTarget, match="no manifest of this bundle.*_manifest.json, data.csv"):
        storage.delete_tree(str(target), CONN)
    assert (target / "data.csv").read_text() == "someone's data"


def test_delete_tree_removes_only_a_claimed_tree_and_keeps_what_it_is_told(tmp_path: Path) -> None:
    foreign = _foreign_folder(tmp_path / "foreign")
    before = _snapshot(foreign)
    with pytest.raises(storage.UnsafeTarget, match="meta.yaml"):
        storage.delete_tree(str(foreign), CONN)
    assert _snapshot(foreign) == before
    staging = tmp_path / "_staging" / "dt=2026-11-20.run1"
    storage.claim(str(staging), ["rejects.csv", "input/"], CONN)
    (staging / "input").mkdir()
    (staging / "input" / "part-00000.parquet").write_text("rows")
    (staging / "rejects.csv").write_text("r")
    storage.delete_tree(str(staging), CONN, keep=["rejects.csv", storage.OWNER_MARKER])
    assert sorted(_snapshot(staging)) == ["_owner.json", "rejects.csv"]
    (staging / "smuggled.txt").write_text("not claimed")
    with pytest.raises(storage.UnsafeTarget, match="smuggled.txt"):
        storage.delete_tree(str(staging), CONN)
    (staging / "smuggled.txt").unlink()
    storage.delete_tree(str(staging), CONN)
    assert not staging.exists()
    with pytest.raises(storage.UnsafeTarget, match="meta.yaml"):  # claiming a foreign folder fails too
        storage.claim(str(foreign), ["x"], CONN)


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "lake"))
    (tmp_path / "lake").mkdir()
    return [str(tmp_path / "lake"), "s3://lake/scoring"]


HOSTILE = {
    "look-alike bucket": "s3://lake-evil/scoring/dt=1",
    "look-alike prefix": "s3://lake/scoringx/dt=1",
    "s3 traversal": "s3://lake/scoring/../x",
    "s3 empty segment": "s3://lake/scoring//x",
    "another bucket": "s3://mlflow/1",
    "file scheme": "file:///etc",
    "http scheme": "http://127.0.0.1:5000/x",
    "upper-case scheme": "S3://lake/scoring/x",
    "empty": "",
    "blank": "  ",
    "trailing newline": "s3://lake/scoring/x\n",
    "relative escape": "../../etc",
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_locations_are_refused_naming_param_value_and_roots(value: str, roots: list[str]) -> None:
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamValidationError

    canonical = [storage.canonical_location(r) for r in roots]
    with pytest.raises(storage.ForbiddenLocation) as refused:
        storage.check_allowed("output", value, canonical)
    assert f"output={value!r}" in str(refused.value) and all(r in str(refused.value) for r in canonical)
    param = Param(None, type=["null", "string"], pattern=storage.roots_pattern(canonical))
    with pytest.raises(ParamValidationError):
        param.resolve(value)


def test_local_traversal_and_a_symlink_escaping_the_root_are_refused(
    tmp_path: Path, roots: list[str]
) -> None:
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamValidationError

    canonical = [storage.canonical_location(r) for r in roots]
    lake = Path(roots[0])
    (lake / "predictions").mkdir()
    (lake / "predictions" / "out").symlink_to(tmp_path, target_is_directory=True)
    escaping = f"{lake}/predictions/out/dt=1"
    with pytest.raises(storage.ForbiddenLocation, match=f"resolves to {tmp_path}/dt=1"):
        storage.check_allowed("output", escaping, canonical)
    with pytest.raises(storage.ForbiddenLocation, match="outside the allowed roots"):
        storage.check_allowed("input", f"{lake}/../elsewhere", canonical)
    param = Param(None, type=["null", "string"], pattern=storage.roots_pattern(canonical))
    with pytest.raises(ParamValidationError):
        param.resolve(f"{lake}/../elsewhere")
    assert param.resolve(escaping) == escaping  # a pattern cannot see symlinks: the task check does


def test_locations_under_the_roots_pass_in_canonical_form(roots: list[str]) -> None:
    from airflow.sdk import Param

    canonical = [storage.canonical_location(r) for r in roots]
    param = Param(None, type=["null", "string"], pattern=storage.roots_pattern(canonical))
    for value in (f"{roots[0]}/predictions/churn/dt=1/", "s3://lake/scoring", "s3://lake/scoring/a/dt=1/"):
        assert param.resolve(value) == value
        assert storage.check_allowed("output", value, canonical) == value.rstrip("/")
    assert param.resolve(None) is None  # unset: the task uses the date's partition
    assert storage.check_allowed("input", f"{roots[0]}/a/./b/../c", canonical) == f"{roots[0]}/a/c"


def test_allowed_locations_come_from_the_config_and_are_checked_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(PROJECT_DIR / "include" / "configs", configs)
    defaults = yaml.safe_load((configs / "defaults.yaml").read_text())
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(configs))
    monkeypatch.setenv("MLOPS_LAKE", "s3://lake/prod")
    assert allowed_roots(get_model_config("churn")) == ["s3://lake/prod"]
    defaults["scoring"]["allowed_locations"] = ["s3://exports/scores/", str(tmp_path / "shared")]
    (configs / "defaults.yaml").write_text(yaml.safe_dump(defaults))
    config = get_model_config("churn")
    assert allowed_roots(config) == ["s3://lake/prod", "s3://exports/scores", str(tmp_path / "shared")]
    assert checked_location(config, "output", "s3://exports/scores/churn") == "s3://exports/scores/churn"
    with pytest.raises(storage.ForbiddenLocation, match="output='s3://exports/other'"):
        checked_location(config, "output", "s3://exports/other")
    # A root itself is no output: the run would stage beside it, outside every root.
    with pytest.raises(storage.ForbiddenLocation, match="is an allowed root itself"):
        checked_location(config, "--output", "s3://exports/scores/")
    assert checked_location(config, "input", "s3://exports/scores") == "s3://exports/scores"
    defaults["scoring"]["allowed_locations"] = ["http://example.com/x"]
    (configs / "defaults.yaml").write_text(yaml.safe_dump(defaults))
    with pytest.raises(ConfigError, match=r"scoring.allowed_locations: .*only s3:// URIs and local paths"):
        get_model_config("churn")
    defaults["scoring"].update(allowed_locations=[], lake="s3://lake/prod/../mlflow")
    (configs / "defaults.yaml").write_text(yaml.safe_dump(defaults))
    with pytest.raises(ConfigError, match=r"scoring.lake: .*may not have empty, '.' or '..' segments"):
        get_model_config("churn")
