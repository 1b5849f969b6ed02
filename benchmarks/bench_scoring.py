"""Time batch scoring at production size: `make bench-scoring` (RAW= reuses full-scale Home Credit CSVs).

Trains a churn and a credit_risk version on small generated data into a throw-away registry and
points production at them, then scores, each in its own process (so its peak memory is its own):
a 1,000,000-row Telco partition and a credit_risk partition of 307,511 applicants with all seven
history tables (the generator's training applicants, presented as application_test.csv).
Scoring runs the real path: row rules, feature SQL, chunked model calls, partition publish.
Prints one JSON line and writes it to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_home_credit import run_phase
from tabular_mlops.config import get_model_config
from tabular_mlops.generators.home_credit import generate_home_credit
from tabular_mlops.generators.telco import FILE_NAME, generate_telco


def _train_and_promote(model: str, raw: str) -> str:
    from tabular_mlops import registry
    from tabular_mlops.pipeline import run_training_chain

    result = run_training_chain(get_model_config(model), raw, run_id=f"bench_{model}", promote=False)
    registry.promote(result["registered_name"], result["version"], "benchmark", reason="scoring benchmark")
    return str(result["version"])


def _setup(work: str) -> dict[str, Any]:
    root = Path(work)
    generate_telco(root / "train" / "telco", rows=3000, seed=1)
    generate_home_credit(root / "train" / "home_credit", rows=3000, seed=1)
    return {
        "churn": _train_and_promote("churn", str(root / "train" / "telco")),
        "credit_risk": _train_and_promote("credit_risk", str(root / "train" / "home_credit")),
    }


def scratch_environment(work: Path) -> None:
    """Point MLflow, the bundle's data and report folders and the online store's keys (training
    credit_risk materialises) into throw-away places; forget_online_keys() deletes the keys."""
    os.environ.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "MLOPS_MLFLOW_DIR": str(work),
            "MLOPS_DATA_DIR": str(work / "data"),
            "MLOPS_REPORTS_DIR": str(work / "reports"),
            "MLOPS_ONLINE_STORE_PREFIX": f"bench-{secrets.token_hex(4)}:online",
        }
    )


def forget_online_keys() -> None:
    """Delete the keys this benchmark wrote to the online store (nothing when none is running)."""
    from tabular_mlops.online_store import connect

    prefix = os.environ["MLOPS_ONLINE_STORE_PREFIX"]
    try:
        client = connect()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.unlink(*keys)
    except Exception as exc:  # a benchmark's cleanup: say so, do not hide the figures
        print(f"could not delete the online store keys under {prefix}: {exc}")


def stage_credit_partition(raw: Path, target: Path) -> None:
    """A credit_risk scoring partition from generated CSVs, by symlink: the history tables as they
    are, and the training applicants standing in for a full-size batch of new applicants."""
    target.mkdir(parents=True)
    for path in raw.glob("*.csv"):
        if path.name not in ("application_train.csv", "application_test.csv"):
            (target / path.name).symlink_to(path.resolve())
    (target / "application_test.csv").symlink_to((raw / "application_train.csv").resolve())


def _score(model: str, source: str, output: str) -> dict[str, Any]:
    from tabular_mlops.scoring import score_partition

    summary = score_partition(get_model_config(model), source, output, run_id="bench")
    counts = summary["counts"]
    return {"rows_in": counts["input"], "rows_scored": counts["scored"], "rows_rejected": counts["rejected"]}


def main() -> None:
    """Train, stage the partitions, score each one; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--credit-rows", type=int, default=307_511, help="applicants to score")
    parser.add_argument("--churn-rows", type=int, default=1_000_000, help="customers to score")
    parser.add_argument("--raw", default=None, help="reuse generated Home Credit CSVs in this folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    scratch_environment(work)
    try:
        setup = run_phase(_setup, str(work))
        versions = {model: setup[model] for model in ("churn", "credit_risk")}
        telco_in = work / "lake" / "incoming" / "churn"
        generate_telco(telco_in, rows=args.churn_rows, seed=2)
        credit_raw = Path(args.raw) if args.raw else work / "raw_home_credit"
        if not args.raw:
            generate_home_credit(credit_raw, rows=args.credit_rows, seed=0)
        credit_in = work / "lake" / "incoming" / "credit_risk"
        stage_credit_partition(credit_raw, credit_in)
        figures: dict[str, Any] = {"cpus": os.cpu_count(), "versions": versions}
        for model, source in (("churn", telco_in), ("credit_risk", credit_in)):
            started = time.perf_counter()
            result = run_phase(_score, model, str(source), str(work / "lake" / "predictions" / model))
            result["wall_seconds"] = round(time.perf_counter() - started, 1)
            result["rows_per_second"] = round(result["rows_in"] / result["seconds"])
            if model == "churn":
                result["csv_mb"] = round((telco_in / FILE_NAME).stat().st_size / 1e6)
            figures[model] = result
        print(json.dumps(figures))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        forget_online_keys()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
