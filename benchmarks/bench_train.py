"""Time credit_risk training on generated applicants: `make bench-train ROWS=20000`.

Generates the tables, ingests them with validation, builds the features, then times
`train_candidate` (fit with early stopping, log the pyfunc, register a version) against a
throw-away SQLite registry. Prints one JSON line and writes it to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tabular_mlops.config import get_model_config
from tabular_mlops.features import build_feature_table
from tabular_mlops.generators.home_credit import generate_home_credit
from tabular_mlops.ingest import ingest_raw_tables


def main() -> None:
    """Generate, ingest, build features, time training; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2, help="MLOPS_TRAIN_THREADS for the fit")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLOPS_MLFLOW_DIR"] = str(work)
    os.environ["MLOPS_DATA_DIR"] = str(work / "data")
    os.environ["MLOPS_REPORTS_DIR"] = str(work / "reports")
    os.environ["MLOPS_TRAIN_THREADS"] = str(args.threads)
    from tabular_mlops.training import train_candidate

    config = get_model_config("credit_risk")
    generate_home_credit(work / "raw", rows=args.rows, seed=0)
    interim = Path(str(ingest_raw_tables(config, source=str(work / "raw"), run_id="bench").interim_dir))
    built = build_feature_table(config, interim, work / "features")
    started = time.perf_counter()
    result = train_candidate(config, interim, built.path)
    figures = {
        "rows": args.rows,
        "threads": args.threads,
        "feature_build_seconds": round(built.seconds, 1),
        "train_seconds": round(time.perf_counter() - started, 1),
        "best_iteration": result.best_iteration,
        "train_rows": result.rows["train"],
        "encoded_features": len(built.columns),
    }
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
