"""A shadow challenger end to end: batch scoring writes its probabilities, monitoring judges it.

The module trains two real churn versions into its own SQLite registry: `good` on the generated
customers and `weak` on the same customers with their labels shuffled (AUC about 0.5), so one
is genuinely better than the other and each can play champion or challenger.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.e2e.conftest import own_registry
from tests.e2e.monitoring_data import TELCO_FILE, customers

PROJECT_DIR = Path(__file__).resolve().parents[2]
KEY = "customerID"


@pytest.fixture(scope="module")
def production_models(tmp_path_factory: pytest.TempPathFactory, telco_raw: Path) -> Iterator[dict]:
    """This module's registry: churn versions `good` and `weak` (registered, no alias set)."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.pipeline import run_training_chain

    root = tmp_path_factory.mktemp("challenger")
    configs = root / "configs"
    shutil.copytree(PROJECT_DIR / "include" / "configs", configs)
    defaults = yaml.safe_load((configs / "defaults.yaml").read_text())
    defaults["scoring"]["chunk_rows"] = 400  # several mapped chunks per partition
    (configs / "defaults.yaml").write_text(yaml.safe_dump(defaults))
    shuffled = root / "shuffled"
    shutil.copytree(telco_raw, shuffled)
    frame = pd.read_csv(shuffled / TELCO_FILE, dtype=str, keep_default_na=False)
    frame["Churn"] = frame["Churn"].sample(frac=1.0, random_state=3).to_numpy()
    frame.to_csv(shuffled / TELCO_FILE, index=False)
    with pytest.MonkeyPatch.context() as patch:
        own_registry(patch, root, configs)
        config = get_model_config("churn")
        good = run_training_chain(config, str(telco_raw), run_id="train_good", promote=False)
        weak = run_training_chain(config, str(shuffled), run_id="train_weak", promote=False)
        yield {"name": good["registered_name"], "good": good["version"], "weak": weak["version"]}


def _roles(models: dict, champion: str | None, challenger: str | None) -> None:
    """Point production and challenger at the given versions (None: remove the challenger alias)."""
    from tabular_mlops import registry, tracking

    name, client = models["name"], tracking.configure()
    if registry.alias_version(name, registry.CHALLENGER) is not None:
        client.delete_registered_model_alias(name, registry.CHALLENGER)
    if champion is not None and registry.alias_version(name, registry.PRODUCTION) != champion:
        registry.promote(name, champion, "test", reason="challenger tests")
    if challenger is not None:
        registry.set_challenger(name, challenger, "test", reason="challenger tests")


def _incoming(lake: Path, day: str, rows: pd.DataFrame) -> Path:
    folder = lake / "incoming" / "churn" / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    rows.drop(columns=["Churn"]).to_csv(folder / TELCO_FILE, index=False)
    (folder / "_SUCCESS").touch()
    return folder


def _published(folder: Path) -> tuple[pd.DataFrame, dict]:
    return pd.read_parquet(folder / "predictions.parquet"), json.loads(
        (folder / "_manifest.json").read_text()
    )


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, production_models: dict) -> Path:
    """A fresh lake and reports folder, and no window verdicts left from another test."""
    from tabular_mlops import tracking
    from tabular_mlops.monitoring import TAG_PREFIX

    monkeypatch.setenv("MLOPS_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("MLOPS_REPORTS_DIR", str(tmp_path / "reports"))
    client = tracking.configure()
    for key in list(client.get_registered_model(production_models["name"]).tags):
        if key.startswith(TAG_PREFIX):
            client.delete_registered_model_tag(production_models["name"], key)
    return tmp_path / "lake"


def test_batch_scoring_writes_the_challengers_own_probabilities(
    dagbag, production_models: dict, lake: Path, telco_raw: Path
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import score_partition

    good, weak = production_models["good"], production_models["weak"]
    _roles(production_models, champion=good, challenger=weak)
    incoming = _incoming(lake, "2026-11-20", customers(telco_raw).head(1000))
    run = dagbag.get_dag("churn_batch_scoring").test(logical_date=datetime(2026, 11, 20, tzinfo=UTC))
    assert run.state == "success"
    predictions, manifest = _published(lake / "predictions" / "churn" / "dt=2026-11-20")
    assert manifest["model_version"] == good and manifest["challenger"]["version"] == weak
    assert manifest["challenger"]["scored"] is True and manifest["challenger"]["rows"] == 1000
    assert set(predictions["challenger_version"]) == {weak} and len(predictions) == 1000

    # The challenger's column is what scoring with that version directly gives, row for row.
    direct = score_partition(get_model_config("churn"), str(incoming), str(lake / "direct"), version=weak)
    assert direct["challenger"] == {
        "version": weak,
        "scored": False,
        "left_out": f"version {weak} is this run's champion itself",
    }
    alone = pd.read_parquet(lake / "direct" / "predictions.parquet")
    assert list(alone[KEY]) == list(predictions[KEY])
    np.testing.assert_allclose(
        predictions["challenger_probability"], alone["probability"], rtol=0, atol=1e-12
    )
    assert not np.allclose(predictions["probability"], predictions["challenger_probability"])


def test_a_broken_challenger_leaves_the_champions_partition_unchanged(
    dagbag, production_models: dict, lake: Path, telco_raw: Path
) -> None:
    from tabular_mlops import registry, tracking

    good, name = production_models["good"], production_models["name"]
    _roles(production_models, champion=good, challenger=None)
    _incoming(lake, "2026-11-21", customers(telco_raw).head(900))
    dag = dagbag.get_dag("churn_batch_scoring")
    assert dag.test(logical_date=datetime(2026, 11, 21, tzinfo=UTC)).state == "success"
    folder = lake / "predictions" / "churn" / "dt=2026-11-21"
    before, plain = _published(folder)
    assert plain["challenger"] is None and "challenger_probability" not in before.columns

    # A version of the same model that was never signed: the alias set behind the bundle's back.
    client = tracking.configure()
    source = client.get_model_version(name, good)
    broken = client.create_model_version(name, source=source.source, run_id=source.run_id).version
    client.set_registered_model_alias(name, registry.CHALLENGER, str(broken))
    assert dag.test(logical_date=datetime(2026, 11, 21, tzinfo=UTC)).state == "success"
    after, manifest = _published(folder)
    shadow = manifest["challenger"]
    assert shadow["version"] == str(broken) and shadow["scored"] is False
    assert "refusing to score it" in shadow["left_out"] and "sign" in shadow["left_out"].lower()
    same = [c for c in before.columns if c not in ("scored_at", "run_id")]
    assert list(after.columns) == list(before.columns)
    pd.testing.assert_frame_equal(after[same], before[same])
    timing = "duration_seconds"
    assert {k: v for k, v in manifest["counts"].items() if k != timing} == {
        k: v for k, v in plain["counts"].items() if k != timing
    }
    client.delete_registered_model_alias(name, registry.CHALLENGER)


def _challenger_events(model: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == f"challenger/{model}")
            .order_by(AssetEvent.id)
            .all()
        )
        return [dict(event.extra) for event in events]


def _score_window(lake: Path, day: str, rows: pd.DataFrame) -> str:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import score_partition

    output = lake / "predictions" / "churn" / f"dt={day}"
    score_partition(get_model_config("churn"), str(_incoming(lake, day, rows)), str(output), day=day)
    return str(output)


def _monitor(dagbag, location: str, labels: Path) -> tuple[object, dict]:
    dag = dagbag.get_dag("churn_monitoring")
    run = dag.test(run_conf={"current": location, "labels": str(labels)})
    day = json.loads((Path(location) / "_manifest.json").read_text())["day"]
    summary = json.loads(
        (
            Path(location).parents[3] / "reports" / "monitoring" / "churn" / f"dt={day}" / "summary.json"
        ).read_text()
    )
    return run, summary


def test_monitoring_proposes_only_a_better_challenger_once_per_window(
    dagbag, production_models: dict, lake: Path, telco_raw: Path, smtp_server
) -> None:
    good, weak = production_models["good"], production_models["weak"]
    rows = customers(telco_raw)
    labels = lake.parent / "labels.csv"
    rows[[KEY, "Churn"]].to_csv(labels, index=False)

    # The weak version answers, the good one shadows: two windows of 1,000 customers each.
    _roles(production_models, champion=weak, challenger=good)
    _score_window(lake, "2026-11-22", rows.iloc[:1000])
    location = _score_window(lake, "2026-11-23", rows.iloc[1000:])
    before = len(_challenger_events("churn"))
    run, summary = _monitor(dagbag, location, labels)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["propose_challenger"] == "success", states
    section = summary["challenger"]
    # Labelled rows accumulate: the earlier window of the same pair counts too.
    assert section["labelled_rows"] == 2000 and section["windows"] == ["2026-11-22", "2026-11-23"]
    assert section["verdict"] == "wins" and section["interval"][0] > 0
    assert section["challenger_auc"] > section["champion_auc"]
    events = _challenger_events("churn")
    assert len(events) == before + 1
    assert events[-1]["version"] == good and events[-1]["evidence"]["labelled_rows"] == 2000
    assert events[-1]["evidence"]["interval"] == section["interval"]

    # The same window judged again (the cron fallback after the Asset run): no second proposal.
    again, _ = _monitor(dagbag, location, labels)
    assert {ti.task_id: ti.state for ti in again.get_task_instances()}["propose_challenger"] == "skipped"
    assert len(_challenger_events("churn")) == before + 1

    # Roles swapped: the weak challenger loses and nothing is proposed.
    _roles(production_models, champion=good, challenger=weak)
    location = _score_window(lake, "2026-11-24", rows)
    run, summary = _monitor(dagbag, location, labels)
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["propose_challenger"] == "skipped"
    assert summary["challenger"]["verdict"] == "loses" and summary["challenger"]["interval"][1] < 0
    assert len(_challenger_events("churn")) == before + 1


def _serving_shadow(lake: Path, day: str, entities: pd.Series, champion: str, challenger: str) -> None:
    """A shadow file as serving writes it (docs/serving.md, shadow scoring), plus rows that must not count."""
    n = len(entities)
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "record": np.zeros(n, dtype="int32"),
            "entity_id": entities.to_numpy(),
            "champion_version": champion,
            "champion_probability": rng.random(n),
            "challenger_version": challenger,
            "challenger_probability": rng.random(n),
            "scored_at": pd.Timestamp(f"{day}T12:00:00Z"),
        }
    )
    others = rows.head(3).assign(challenger_version="999")  # another challenger
    anonymous = rows.head(2).assign(entity_id=None)  # no entity id: cannot meet a label
    folder = lake / "shadow" / "churn" / f"dt={day}"
    folder.mkdir(parents=True)
    pd.concat([rows, others, anonymous]).to_parquet(folder / "host-1-0-0.parquet", index=False)


def test_too_few_labelled_rows_from_batch_and_serving_are_reported_not_judged(
    production_models: dict, lake: Path, telco_raw: Path
) -> None:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import challenger_proposal, measure

    weak, good = production_models["weak"], production_models["good"]
    _roles(production_models, champion=weak, challenger=good)
    rows = customers(telco_raw)
    location = _score_window(lake, "2026-11-25", rows.iloc[:1500])
    _serving_shadow(lake, "2026-11-25", rows[KEY].iloc[1500:1600], weak, good)
    labels = lake.parent / "few.csv"
    rows[[KEY, "Churn"]].iloc[1400:1600].to_csv(labels, index=False)
    config = get_model_config("churn")
    summary = measure(config, location, labels=str(labels))
    section = summary["challenger"]
    assert section["verdict"] == "too few labelled rows" and section["labelled_rows"] == 200
    assert section["rows_by_source"] == {"batch": 100, "serving": 100}
    assert section["min_labelled"] == config.promotion.shadow_min_labelled
    extra, why = challenger_proposal(config, summary, "test")
    assert extra is None and "too few labelled rows" in why
