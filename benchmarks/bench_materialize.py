"""Time materialising credit_risk's history features at full size: `make bench-materialize`.

Generates the Home Credit CSVs for ROWS training applicants (307,511 by default, with the real
48,744 test applicants beside them; or reuses --raw), then, each phase in its own process so its
peak memory is its own:

1. `typed`: the six history tables through batch scoring's row rules into typed parquet (what
   the training DAG's interim tables are);
2. `materialize`: the history SQL over them and every applicant's row into the online store
   (the machine's Redis at MLOPS_ONLINE_STORE_URL, else 127.0.0.1:6379, under a key prefix of
   its own that is deleted afterwards): what the DAG's `materialize` task runs;
3. `lookup`: 2,000 single-applicant reads as serving makes them (p50/p99).

Prints one JSON document and writes it to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_home_credit import run_phase
from bench_scoring import forget_online_keys, scratch_environment
from tabular_mlops.config import get_model_config
from tabular_mlops.generators.home_credit import generate_home_credit


def _typed(raw: str, out: str) -> dict[str, Any]:
    """The history tables through the row rules into typed parquet; return their paths."""
    from tabular_mlops import materialize, scoring
    from tabular_mlops.features import read_sql_folder

    config = get_model_config("credit_risk")
    history = materialize.history_sql(config, read_sql_folder(config.sql_path), None, None)
    tables = materialize.history_tables(config, history)
    files = [p.name for p in Path(raw).iterdir()]
    found = scoring.find_tables(config, raw, files, tables)
    inputs, typed = scoring.load_tables(config, raw, found, Path(out), lambda _m: None)
    return {
        "tables": {t: str(p) for t, p in typed.items()},
        "rows": sum(r.outcome.rows_read for r in inputs),
        "rejected": sum(r.outcome.rows_quarantined for r in inputs),
    }


def _materialize(tables: dict[str, str]) -> dict[str, Any]:
    """The history SQL over the typed tables into the store, as the DAG's task runs it."""
    from tabular_mlops import materialize
    from tabular_mlops.features import read_sql_folder

    config = get_model_config("credit_risk")
    history = materialize.history_sql(config, read_sql_folder(config.sql_path), None, None)
    done = materialize.materialize_tables(config, {t: Path(p) for t, p in tables.items()}, history, "bench")
    return {"entities": done.entities, "columns": done.columns, "namespace": done.namespace}


def _lookup(count: int) -> dict[str, Any]:
    """Single-entity reads of random applicants through serving's reader."""
    import numpy as np
    from tabular_mlops import materialize
    from tabular_mlops.features import read_sql_folder
    from tabular_mlops.online_store import OnlineReader, unpack

    config = get_model_config("credit_risk")
    history = materialize.history_sql(config, read_sql_folder(config.sql_path), None, None)
    reader = OnlineReader(config.name, history.sql)
    keys = [k.decode() for k in reader.client.hkeys(_rows_key(reader))]
    chosen = random.Random(0).choices(keys, k=count)  # noqa: S311 - a benchmark's sample, not a secret
    times = []
    for key in chosen:
        started = time.perf_counter()
        found = reader.lookup([key])
        unpack(found.rows[0] or b"", len(found.meta.columns))
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1e3
    return {
        "reads": count,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def _rows_key(reader: Any) -> str:
    generation = reader.client.get(f"{reader.prefix}:current").decode()
    return f"{reader.prefix}:rows:{generation}"


def _redis_memory() -> int:
    from tabular_mlops.online_store import connect

    return int(connect().info("memory")["used_memory"])


def main() -> None:
    """Generate (or reuse), type, materialise and read; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=307_511, help="training applicants to generate")
    parser.add_argument("--raw", default=None, help="reuse generated CSVs in this folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-materialize-"))
    scratch_environment(work)  # the online store's keys under a prefix of its own; spawned phases inherit it
    raw = Path(args.raw) if args.raw else work / "raw"
    generated = None
    try:
        if not args.raw:
            started = time.perf_counter()
            generate_home_credit(raw, rows=args.rows, seed=0)
            generated = round(time.perf_counter() - started, 1)
        typed = run_phase(_typed, str(raw), str(work / "typed"))
        before = _redis_memory()
        stored = run_phase(_materialize, typed.pop("tables"))
        memory = _redis_memory() - before
        figures = {
            "rows": args.rows,
            "generate_seconds": generated,
            "typed": typed,
            "materialize": {**stored, "redis_used_memory_mb": round(memory / 2**20)},
            "lookup": run_phase(_lookup, 2000),
            "cpus": os.cpu_count(),
        }
    finally:
        forget_online_keys()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
