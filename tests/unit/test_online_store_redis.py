"""The online store's writer and reader against the machine's Redis, on a small generated data set."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import online_store_or_skip


@pytest.fixture(scope="module")
def history_parquet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Typed parquet history tables of 300 generated applicants, through the row rules."""
    from tabular_mlops import materialize, scoring
    from tabular_mlops.config import get_model_config
    from tabular_mlops.features import read_sql_folder
    from tabular_mlops.generators.home_credit import generate_home_credit

    root = tmp_path_factory.mktemp("history")
    generate_home_credit(root / "raw", rows=300, seed=3)
    config = get_model_config("credit_risk")
    history = materialize.history_sql(config, read_sql_folder(config.sql_path), None, None)
    files = [p.name for p in (root / "raw").iterdir()]
    found = scoring.find_tables(config, str(root / "raw"), files, materialize.history_tables(config, history))
    _, typed = scoring.load_tables(config, str(root / "raw"), found, root / "typed", lambda _m: None)
    return typed


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A key prefix of the test's own in the machine's Redis, deleted afterwards."""
    online_store_or_skip()
    from tabular_mlops.online_store import connect

    prefix = f"{os.environ['MLOPS_ONLINE_STORE_PREFIX']}-{secrets.token_hex(3)}"
    monkeypatch.setenv("MLOPS_ONLINE_STORE_PREFIX", prefix)
    yield prefix
    client = connect()
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.unlink(*keys)


def _history() -> object:
    from tabular_mlops import materialize
    from tabular_mlops.config import get_model_config
    from tabular_mlops.features import read_sql_folder

    config = get_model_config("credit_risk")
    return materialize.history_sql(config, read_sql_folder(config.sql_path), "credit-risk-classifier", "7")


def _write(tables: dict[str, Path], **kwargs: object) -> object:
    from tabular_mlops import materialize
    from tabular_mlops.config import get_model_config

    return materialize.materialize_tables(
        get_model_config("credit_risk"), tables, _history(), "test", **kwargs
    )


def test_packing_keeps_every_value_and_every_null_exactly() -> None:
    from tabular_mlops.online_store import pack, unpack

    values = np.array([1.5, np.nan, -0.0, 1e300, np.nan, 3.0, -7.25, np.inf, 0.1, np.nan])
    as_of, back = unpack(pack(1234.5, values), len(values))
    assert as_of == 1234.5
    assert np.array_equal(back, values, equal_nan=True) and np.signbit(back[2])
    assert len(pack(0.0, np.full(389, np.nan))) < 100  # an applicant without history costs bytes


def test_the_reader_sees_what_the_writer_wrote_with_its_version_and_sql(
    store: str, history_parquet: dict[str, Path]
) -> None:
    import duckdb
    from tabular_mlops.features import bind_parquet, run_feature_sql
    from tabular_mlops.online_store import OnlineReader, unpack

    done = _write(history_parquet)
    history = _history()
    with duckdb.connect() as con:
        bind_parquet(con, history_parquet)
        expected = run_feature_sql(con, history.sql, final=history.view).df().set_index("SK_ID_CURR")
    reader = OnlineReader("credit_risk", history.sql)
    keys = [str(k) for k in expected.index[:25]] + ["-1"]
    found = reader.lookup(keys)
    assert found.meta.model_version == "7" and found.meta.rows == done.entities == len(expected)
    assert found.rows[-1] is None  # not in the store
    for key, blob in zip(keys[:-1], found.rows[:-1], strict=True):
        _, values = unpack(blob, len(found.meta.columns))
        want = expected.loc[int(key), found.meta.columns].to_numpy(dtype=float)
        assert np.array_equal(values, want, equal_nan=True), key


def test_a_reader_of_other_sql_finds_nothing_and_is_told_to_materialise(store: str) -> None:
    from tabular_mlops.online_store import NotMaterialized, OnlineReader

    reader = OnlineReader("credit_risk", {"history_features": "select 1 as SK_ID_CURR"})
    with pytest.raises(NotMaterialized, match="mlops materialize --model credit_risk"):
        reader.lookup(["100001"])


def test_an_upsert_replaces_its_entities_keeps_the_rest_and_never_goes_back_in_time(
    store: str, history_parquet: dict[str, Path], tmp_path: Path
) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from tabular_mlops.online_store import OnlineReader, unpack

    today = datetime(2026, 12, 3, tzinfo=UTC)
    full = _write(history_parquet, as_of=today - timedelta(days=1))
    bureau = pq.read_table(history_parquet["bureau"])
    ids = sorted(set(bureau.column("SK_ID_CURR").to_pylist()))
    mover, leaver, stranger = ids[0], ids[1], 999_999_999
    # A partition about three applicants: the mover's history changed, the leaver has none left.
    partition = {}
    for table, path in history_parquet.items():
        frame = pq.read_table(path)
        if "SK_ID_CURR" in frame.column_names:
            frame = frame.filter(pc.equal(frame.column("SK_ID_CURR"), mover))
        partition[table] = tmp_path / f"{table}.parquet"
        pq.write_table(frame, partition[table])
    upsert = _write(partition, as_of=today, upsert_entities=[str(mover), str(leaver), str(stranger)])
    assert upsert.generation == full.generation and upsert.removed == 1
    assert upsert.entities == full.entities - 1
    reader = OnlineReader("credit_risk", _history().sql)
    found = reader.lookup([str(mover), str(leaver), str(ids[2])])
    assert found.rows[1] is None and found.rows[2] is not None
    assert unpack(found.rows[0], len(found.meta.columns))[0] == today.timestamp()
    # A backfill of an older day changes nothing the store holds as of a later day.
    stale = _write(history_parquet, as_of=today - timedelta(days=5), upsert_entities=[str(mover)])
    again = reader.lookup([str(mover)])
    assert stale.removed == 0 and unpack(again.rows[0], len(found.meta.columns))[0] == today.timestamp()


def test_a_second_writer_is_refused_and_a_killed_writers_generation_is_swept(
    store: str, history_parquet: dict[str, Path]
) -> None:
    from tabular_mlops import online_store
    from tabular_mlops.online_store import OnlineStoreError, connect

    done = _write(history_parquet)
    client = connect()
    lock = f"{done.namespace}:lock"
    client.set(lock, "someone-else", ex=60)
    with pytest.raises(OnlineStoreError, match="another materialisation"):
        _write(history_parquet)
    client.delete(lock)
    # A writer killed mid-way left rows of a generation nobody points at.
    client.hset(f"{done.namespace}:rows:killed-1", mapping={"1": b"x"})
    again = _write(history_parquet)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{done.namespace}:*"))
    assert keys == sorted(
        f"{done.namespace}:{part}"
        for part in ("current", f"meta:{again.generation}", f"rows:{again.generation}")
    )
    assert online_store.redacted("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
