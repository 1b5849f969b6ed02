"""The `mlops` command: one subcommand per stage, running the same code as the Airflow tasks.

Progress goes to stderr, a JSON summary is the last line on stdout, and the exit code says how it
went: 0 done, 1 the stage refused the data or model, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _progress(message: str) -> None:
    print(f"[mlops] {message}", file=sys.stderr, flush=True)


def _emit(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, default=str), flush=True)


def _generate(args: argparse.Namespace) -> int:
    from tabular_mlops.generators.dataset import DATASETS, generate_dataset
    from tabular_mlops.storage import is_s3, upload_folder

    if args.dataset not in DATASETS:
        raise SystemExit(f"unknown dataset {args.dataset!r}")
    if is_s3(args.out):
        with tempfile.TemporaryDirectory() as tmp:
            result = generate_dataset(
                args.dataset, Path(tmp), args.rows, args.seed, args.drift, args.dirty_rows, progress=_progress
            )
            written = upload_folder(Path(tmp), args.out, args.aws_conn_id)
            _progress(f"uploaded {len(written)} file(s) to {args.out}")
    else:
        result = generate_dataset(
            args.dataset,
            Path(args.out),
            args.rows,
            args.seed,
            args.drift,
            args.dirty_rows,
            progress=_progress,
        )
    _emit({"dataset": args.dataset, "out": args.out, **result})
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.ingest import IngestFailed, ingest_raw_tables

    config = get_model_config(args.model)
    try:
        report = ingest_raw_tables(config, source=args.data, run_id=args.run_id, progress=_progress)
    except IngestFailed as exc:
        print(str(exc), file=sys.stderr)
        _emit(_validation_summary(exc.report))
        return EXIT_FAILED
    for warning in report.warnings:
        _progress(f"warning: {warning.describe()}")
    _emit(_validation_summary(report))
    return EXIT_OK


def _validation_summary(report: Any) -> dict[str, Any]:
    return {
        "model": report.model,
        "run_id": report.run_id,
        "status": report.status,
        "interim_dir": report.interim_dir,
        "report": f"{report.report_dir}/summary.md",
        "tables": {
            name: {
                "read": t.rows_read,
                "quarantined": t.rows_quarantined,
                "written": t.rows_written,
                "blank_to_null": t.blank_to_null,
            }
            for name, t in report.tables.items()
        },
        "failures": [e.describe() for e in report.failures],
        "warnings": len(report.warnings),
    }


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the mlops command."""
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a synthetic copy of a data set with the real schema")
    gen.add_argument("--dataset", required=True, choices=["home_credit", "telco"])
    gen.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    gen.add_argument(
        "--rows",
        type=int,
        default=None,
        help="applicants (home_credit, default 5000) or customers (telco, default 7043)",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--drift", action="store_true", help="shift distributions and the label relation")
    gen.add_argument(
        "--dirty-rows",
        type=int,
        default=0,
        help="corrupt this many rows of the labelled table like files found in the wild",
    )
    gen.add_argument("--aws-conn-id", default="aws_default", help="Airflow connection for s3:// output")
    gen.set_defaults(handler=_generate)

    val = sub.add_parser("validate", help="validate raw tables and write typed interim tables")
    val.add_argument("--model", required=True, help="model config name, e.g. churn or credit_risk")
    val.add_argument("--data", default=None, help="raw data folder or s3:// prefix (default: the config's)")
    val.add_argument("--run-id", default=None, help="run id for output folders (default: cli_<UTC time>)")
    val.set_defaults(handler=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the mlops command."""
    from tabular_mlops.config import ConfigError
    from tabular_mlops.storage import StorageError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, StorageError, ValueError) as exc:
        print(f"mlops {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
