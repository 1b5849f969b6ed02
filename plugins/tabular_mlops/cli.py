"""The `mlops` command: one subcommand per stage, running the same code as the Airflow tasks.

Progress goes to stderr, a JSON summary is the last line on stdout, and the exit code says how it
went: 0 done, 1 the stage refused the data or model, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tabular_mlops.training import RunOverrides

    # What add_subparsers returns; each _add_<command> below adds its subcommand to it.
    _Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DEFAULT_DAY = "default: the date's partition"
_DATA_HELP = (
    "raw data folder or s3:// prefix; a one-table model (churn) also takes its CSV file, local or an "
    "s3:// key ending in .csv (default: the config's data.source)"
)
_PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What the data, a config or a service can refuse with, by command: each becomes one line
# `mlops <command>: error: <message>` and exit 1 (a config error 2), never a traceback. Named, not
# imported, so a command loads only its own modules (their imports cost seconds); ValueError
# (pydantic, pyarrow, bad values) always counts.
_ALWAYS = ("tabular_mlops.config:ConfigError", "tabular_mlops.storage:StorageError")
_TABLES = ("duckdb:Error", "tabular_mlops.features:FeatureBuildError")
_REGISTRY = (
    "mlflow.exceptions:MlflowException",
    "tabular_mlops.registry:RegistryError",
    "tabular_mlops.signing:SignatureError",
)
_ERRORS = {
    "generate": (),
    "validate": ("duckdb:Error", "tabular_mlops.ingest:IngestFailed"),
    "train": (
        *_TABLES,
        *_REGISTRY,
        "tabular_mlops.ingest:IngestFailed",
        "tabular_mlops.promotion:GateRefused",
    ),
    "evaluate": (*_TABLES, *_REGISTRY, "tabular_mlops.ingest:IngestFailed"),
    "score": (*_TABLES, *_REGISTRY, "tabular_mlops.scoring:ScoringError"),
    "materialize": (
        *_TABLES,
        *_REGISTRY,
        "tabular_mlops.scoring:ScoringError",
        "tabular_mlops.online_store:OnlineStoreError",
    ),
    "monitor": (*_TABLES, *_REGISTRY, "tabular_mlops.monitoring:MonitoringError"),
    "approve": ("tabular_mlops.airflow_api:AirflowApiError",),
    "reject": ("tabular_mlops.airflow_api:AirflowApiError",),
}


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


def _flag(name: str) -> str:
    """The train flag that sets an override: test_split -> --test-split."""
    return "--" + name.replace("_", "-")


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value` of --param, the value read as a bool (true/false), int, float or else text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _PARAM_KEY.match(key):
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value with a parameter name as key")
    raw = raw.strip()
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    for cast in (int, float):
        try:
            value = cast(raw)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: {raw} is not a finite number")
        return key, value
    return key, raw


def run_overrides(args: argparse.Namespace) -> RunOverrides:
    """The RunOverrides of `mlops train`'s flags; ConfigError when a --param key is given twice."""
    from tabular_mlops.config import ConfigError
    from tabular_mlops.training import RunOverrides

    params: dict[str, Any] = {}
    for key, value in args.param or []:
        if key in params and params[key] != value:
            raise ConfigError(f"--param {key} given twice ({params[key]!r} and {value!r})")
        params[key] = value
    return RunOverrides(
        test_split=args.test_split,
        learning_rate=args.learning_rate,
        num_leaves=args.num_leaves,
        params=params,
        experiment_name=args.experiment_name,
        register_name=args.register_name,
    )


def _train(args: argparse.Namespace) -> int:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.ingest import IngestFailed
    from tabular_mlops.pipeline import run_training_chain
    from tabular_mlops.promotion import GateOverrides
    from tabular_mlops.training import apply_overrides

    config = get_model_config(args.model)
    changes = run_overrides(args)
    apply_overrides(config, changes, naming=_flag)  # refuse a bad value before any data is read
    overrides = GateOverrides(min_auc=args.min_auc, min_accuracy=args.min_accuracy)
    try:
        result = run_training_chain(
            config,
            args.data,
            args.run_id,
            overrides,
            dry_run=args.dry_run,
            progress=_progress,
            run_overrides=changes,
        )
    except IngestFailed as exc:
        print(str(exc), file=sys.stderr)
        _emit({"model": args.model, "status": "failed", "stage": "data_ingest", "promoted": False})
        return EXIT_FAILED
    _say_outcome(config, result, args.dry_run)
    _emit(result)
    # A dry run reports and moves nothing, so a refusal is an answer, not a failure.
    return EXIT_OK if result["gate"]["passed"] or args.dry_run else EXIT_FAILED


def _say_outcome(config: Any, result: dict[str, Any], dry_run: bool) -> None:
    """One progress line on what the chain did with the candidate."""
    if not result["gate"]["passed"]:
        _progress("gate refused the candidate: " + "; ".join(result["gate"]["reasons"]))
    elif result.get("note"):
        _progress(f"version {result['version']} {result['note']}")
    elif result.get("awaiting_approval"):
        _progress(
            f"{config.name} requires approval (promotion.approval): version {result['version']} is "
            f"registered and gated, nothing moved; after review: mlops promote --model {config.name} "
            f"--version {result['version']}, or train through {config.name}_training in Airflow"
        )
    elif result.get("alias") == "challenger":
        _progress(f"{result['registered_name']} version {result['version']} is the challenger (shadow mode)")
    elif result["promoted"]:
        _progress(f"promoted {result['registered_name']} version {result['version']} to production")
    if dry_run:
        _progress(f"dry run: no version registered, no alias moved; results on MLflow run {result['run_id']}")


def _evaluate(args: argparse.Namespace) -> int:
    """Score a registry version and the version an alias names on the same test rows, side by side."""
    from tabular_mlops.config import get_model_config
    from tabular_mlops.evaluation import comparison_table
    from tabular_mlops.ingest import IngestFailed
    from tabular_mlops.pipeline import compare_versions

    config = get_model_config(args.model)
    try:
        result = compare_versions(
            config, args.version, args.baseline_alias, args.data, args.run_id, progress=_progress
        )
    except IngestFailed as exc:
        print(str(exc), file=sys.stderr)
        _emit({"model": args.model, "status": "failed", "stage": "data_ingest"})
        return EXIT_FAILED
    base = result["baseline"]
    rows = result["rows"]
    _progress(f"{rows['n']:,} test rows ({rows['positives']:,} positive) of {rows['interim_dir']}")
    header = (f"v{result['version']}", f"v{base['version']} ({base['alias']})")
    for line in comparison_table(result["metrics"], *header):
        print(f"  {line}", file=sys.stderr)
    _emit(result)
    return EXIT_OK


def _score(args: argparse.Namespace) -> int:
    from datetime import UTC, date, datetime

    from tabular_mlops.config import get_model_config
    from tabular_mlops.scoring import ScoringError, checked_location, partition, score_partition
    from tabular_mlops.storage import ForbiddenLocation, UnsafeTarget

    config = get_model_config(args.model)
    day = date.fromisoformat(args.date) if args.date else datetime.now(UTC).date()
    source = partition(config, "incoming", day) if args.input is None else args.input
    output = partition(config, "predictions", day) if args.output is None else args.output
    try:  # the same allowed roots as the DAG's Params, named by the flag that was given
        source = checked_location(config, "--input", source)
        output = checked_location(config, "--output", output)
    except ForbiddenLocation as exc:
        print(f"mlops score: {exc}", file=sys.stderr)
        refused = {"model": args.model, "status": "refused", "input": source, "output": output}
        _emit({**refused, "error": str(exc)})
        return EXIT_USAGE
    _progress(f"scoring {source} -> {output}")
    try:
        summary = score_partition(
            config,
            source,
            output,
            args.threshold,
            args.version,
            args.run_id,
            progress=_progress,
            day=day.isoformat(),
        )
    except (ScoringError, UnsafeTarget) as exc:
        print(f"mlops score: {exc}", file=sys.stderr)
        _emit({"model": args.model, "status": "failed", "input": source, "output": output, "error": str(exc)})
        return EXIT_FAILED
    counts = summary["counts"]
    _progress(
        f"{counts['scored']:,} scored + {counts['rejected']:,} rejected = {counts['input']:,} input rows; "
        f"{counts['positives']:,} predicted positive with model version {summary['model_version']}"
    )
    _emit({"status": "published", **summary})
    return EXIT_OK


def _materialize(args: argparse.Namespace) -> int:
    from tabular_mlops.config import get_model_config
    from tabular_mlops.materialize import materialize_location
    from tabular_mlops.settings import resolve_location

    config = get_model_config(args.model)
    source = resolve_location(args.data or config.data.source)
    _progress(f"materialising {config.name}'s history features from {source}")
    done = materialize_location(config, source, args.version, args.upsert, progress=_progress)
    _progress(
        f"{done.entities:,} entities x {done.columns} features in the online store ({done.mode}, "
        f"version {done.model_version or 'none'}, {done.seconds:.1f}s)"
    )
    _emit({"status": "materialized", **done.to_dict()})
    return EXIT_OK


def _monitor(args: argparse.Namespace) -> int:
    from tabular_mlops import faults
    from tabular_mlops.config import get_model_config
    from tabular_mlops.monitoring import MonitoringError, monitor

    config = get_model_config(args.model)
    try:  # monitor() waits out a transient fault step by step; one still failing ends here
        summary = monitor(
            config, args.current, args.reference, args.labels, send=not args.no_email, progress=_progress
        )
    except Exception as exc:
        if not isinstance(exc, MonitoringError) and not faults.is_transient(exc):
            raise
        error = str(exc) if isinstance(exc, MonitoringError) else f"still failing: {faults.describe(exc)}"
        print(f"mlops monitor: {error}", file=sys.stderr)
        _emit({"model": args.model, "status": "failed", "error": error})
        return EXIT_FAILED
    _progress(f"{summary['headline']}; breach: {summary['breach']}; alert: {summary['alert_reason']}")
    _progress(f"report: {summary['report']}")
    _emit(summary)
    return EXIT_OK


def _registered_name(model: str) -> str:
    """Registry name of a model config (its model.registered_name)."""
    from tabular_mlops import tracking
    from tabular_mlops.config import get_model_config

    return tracking.registered_name(get_model_config(model).model.registered_name)


def _promote(args: argparse.Namespace) -> int:
    from tabular_mlops import registry

    name = _registered_name(args.model)
    if args.source == registry.CHALLENGER:
        reason = args.reason or "manual promotion of the challenger"
        move = registry.promote_challenger(name, registry.actor(), reason=reason)
    else:
        move = registry.promote(
            name, args.version, registry.actor(), reason=args.reason or "manual promotion"
        )
    if move.already:
        print(
            f"[mlops] {name} version {move.to_version} is already in production "
            f"(since {move.at}, by {move.actor}); nothing moved",
            file=sys.stderr,
        )
    _emit(move.to_dict())
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    from tabular_mlops import registry

    name = _registered_name(args.model)
    move = registry.rollback(name, registry.actor(), reason=args.reason or "manual rollback")
    _emit(move.to_dict())
    return EXIT_OK


def _archive_challenger(args: argparse.Namespace) -> int:
    from tabular_mlops import registry

    name = _registered_name(args.model)
    move = registry.archive_challenger(name, registry.actor(), reason=args.reason or "manual archive")
    _emit(move.to_dict())
    return EXIT_OK


def _answer(args: argparse.Namespace) -> int:
    """Approve or reject a run's waiting approval task through Airflow's REST API."""
    from tabular_mlops.airflow_api import AirflowApi, answer_approval
    from tabular_mlops.config import get_model_config

    get_model_config(args.model)  # an unknown model is a usage error before any network call
    dag_id = args.dag or f"{args.model}_training"
    option = "Approve" if args.command == "approve" else "Reject"
    answered = answer_approval(AirflowApi.from_env(), dag_id, args.run, option, args.comment or "")
    who = (answered.get("responded_by") or {}).get("name", "?")
    _progress(f"{option.lower()}d {dag_id} run {args.run} as {who}; the run resumes now")
    _emit({"model": args.model, "dag_id": dag_id, "run_id": args.run, "answer": answered})
    return EXIT_OK


def _sign(args: argparse.Namespace) -> int:
    """Check a version's signature, or re-sign it with the current key after checking it (rotation)."""
    from tabular_mlops import signing

    name = _registered_name(args.model)
    if args.check:
        if not signing.signing_keys().configured:
            raise signing.SignatureError(f"{signing.KEY_ENV} is not set: there is no key to check with")
        signer = signing.verify_version(name, args.version)
        _emit({"model": name, "version": args.version, "verified": True, "key_id": signer})
        return EXIT_OK
    tag = signing.resign(name, args.version)
    _emit({"model": name, "version": args.version, "signed": True, "key_id": tag.split(":")[2]})
    return EXIT_OK


def _answer_text(approval: dict[str, Any] | None) -> str:
    """` [approve by alice at ...: "comment"]` for an entry with an approval answer."""
    if not approval:
        return ""
    when = approval.get("responded_at")
    return f" [{approval.get('decision')} by {approval.get('by')} at {when}: {approval.get('comment')!r}]"


def _history(args: argparse.Namespace) -> int:
    from tabular_mlops import registry

    name = _registered_name(args.model)
    moves = registry.history(name)
    for move in moves:
        print(
            f"{move['at']}  {move['action']:<9} {move.get('alias', 'production') or '(answer)':<10} "
            f"v{move['from_version'] or '-'} -> v{move['to_version'] or '-'}"
            f"  by {move['actor']}  {move.get('reason', '')}{_answer_text(move.get('approval'))}",
            file=sys.stderr,
        )
    _emit({"model": args.model, "registered_name": name, "moves": moves})
    return EXIT_OK


def _registry_access(args: argparse.Namespace) -> int:
    import os

    from tabular_mlops import registry_access, tracking

    uri = tracking.tracking_uri()
    if not uri.startswith(("http://", "https://")):
        raise registry_access.RegistryAccessError(f"MLFLOW_TRACKING_URI must be an MLflow server, not {uri}")
    if not (os.environ.get("MLFLOW_TRACKING_USERNAME") and os.environ.get("MLFLOW_TRACKING_PASSWORD")):
        raise registry_access.RegistryAccessError(
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD must hold the MLflow admin's credentials"
        )
    accounts = registry_access.accounts_from_env()
    _progress(f"registry access on {uri}: users {', '.join(a.username for a in accounts)}")
    _emit(registry_access.bootstrap(uri, accounts))
    return EXIT_OK


def _webhook(args: argparse.Namespace) -> int:
    from tabular_mlops import webhooks

    summary = webhooks.register(args.url)
    _progress(f"webhook {summary['name']} {summary['action']}: {', '.join(summary['events'])} -> {args.url}")
    _emit(summary)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the mlops command."""
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # In this order in `mlops --help`: the pipeline's stages, then the registry's moves, then admin.
    for add in (
        _add_generate,
        _add_validate,
        _add_train,
        _add_evaluate,
        _add_score,
        _add_materialize,
        _add_monitor,
        _add_promote,
        _add_archive_challenger,
        _add_answers,
        _add_rollback,
        _add_sign,
        _add_history,
        _add_admin,
    ):
        add(sub)
    return parser


def _add_generate(sub: _Subcommands) -> None:
    """The `mlops generate` subcommand."""
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


def _add_validate(sub: _Subcommands) -> None:
    """The `mlops validate` subcommand."""
    val = sub.add_parser("validate", help="validate raw tables and write typed interim tables")
    val.add_argument("--model", required=True, help="model config name, e.g. churn or credit_risk")
    val.add_argument("--data", default=None, help=_DATA_HELP)
    val.add_argument("--run-id", default=None, help="run id for output folders (default: cli_<UTC time>)")
    val.set_defaults(handler=_validate)


def _add_train(sub: _Subcommands) -> None:
    """The `mlops train` subcommand, with its config overrides (_add_override_flags)."""
    tr = sub.add_parser(
        "train",
        help="validate, build features, train, evaluate, gate and promote",
        description="Each override below changes the config for this run only and is recorded on the "
        "MLflow run (params override.<name> beside the effective values, tag mlops.overrides).",
    )
    tr.add_argument("--model", required=True)
    tr.add_argument("--data", default=None, help=_DATA_HELP)
    tr.add_argument("--run-id", default=None, help="run id of the ingest/feature folders")
    tr.add_argument("--min-auc", type=float, default=None, help="override the gate's AUC floor")
    tr.add_argument("--min-accuracy", type=float, default=None, help="override the gate's accuracy floor")
    tr.add_argument(
        "--dry-run",
        action="store_true",
        help="train, evaluate and gate into the MLflow run; register no version, move no alias",
    )
    _add_override_flags(tr)
    tr.set_defaults(handler=_train)


def _add_override_flags(tr: argparse.ArgumentParser) -> None:
    """The config overrides of `mlops train` (training.RunOverrides)."""
    tr.add_argument(
        "--test-split",
        type=float,
        default=None,
        metavar="SHARE",
        help="share of entities held out for the test split (split.test_size; 0 < SHARE < 1, and with "
        "split.validation_size it must leave 10%% to train on)",
    )
    tr.add_argument(
        "--learning-rate", type=float, default=None, metavar="RATE", help="the booster's learning_rate (0, 1]"
    )
    tr.add_argument(
        "--num-leaves",
        type=int,
        default=None,
        metavar="N",
        help="LightGBM's num_leaves (2 or more); refused for XGBoost models: --param max_depth=N instead",
    )
    tr.add_argument(
        "--param",
        type=parse_param,
        action="append",
        metavar="KEY=VALUE",
        help="any argument of the configured estimator (its get_params()), repeatable; VALUE is read "
        "as true/false, an integer, a number or else text",
    )
    tr.add_argument("--experiment-name", default=None, help="the MLflow experiment of this run")
    tr.add_argument(
        "--register-name",
        default=None,
        help="register the version under this name (lower-case letters, digits, '-'; not another "
        "model's); it is evaluated and gated there, and no alias is moved",
    )


def _add_evaluate(sub: _Subcommands) -> None:
    """The `mlops evaluate` subcommand."""
    ev = sub.add_parser(
        "evaluate", help="score a registry version and the version an alias names on the same test rows"
    )
    ev.add_argument("--model", required=True)
    ev.add_argument("--version", required=True, help="the registry version to evaluate")
    ev.add_argument(
        "--baseline-alias",
        default="production",
        help="compare with the version this alias names (default: production)",
    )
    ev.add_argument(
        "--data",
        default=None,
        help="raw data whose test split (the config's split) is scored, as train's --data "
        "(default: the latest ingested data of the model)",
    )
    ev.add_argument("--run-id", default=None, help="run id of the ingest folders when --data is given")
    ev.set_defaults(handler=_evaluate)


def _add_score(sub: _Subcommands) -> None:
    """The `mlops score` subcommand."""
    sc = sub.add_parser("score", help="score one partition with the production (or a given) version")
    sc.add_argument("--model", required=True)
    sc.add_argument(
        "--input",
        default=None,
        help="input folder or s3:// prefix under the lake or scoring.allowed_locations; a one-table "
        f"model (churn) also takes a single CSV file there ({_DEFAULT_DAY})",
    )
    sc.add_argument(
        "--output",
        default=None,
        help=f"output folder or s3:// prefix under the lake or scoring.allowed_locations ({_DEFAULT_DAY})",
    )
    sc.add_argument(
        "--date",
        default=None,
        help="YYYY-MM-DD: the partition's day, written to its manifest (monitoring's window date) "
        "and naming the default partitions (default: today, UTC)",
    )
    sc.add_argument("--threshold", type=float, default=None, help="override the config's decision threshold")
    sc.add_argument("--version", default=None, help="score with this registry version, not production")
    sc.add_argument("--run-id", default=None, help="run id written beside every prediction")
    sc.set_defaults(handler=_score)


def _add_materialize(sub: _Subcommands) -> None:
    """The `mlops materialize` subcommand."""
    ma = sub.add_parser(
        "materialize", help="write a model's history features to the online store (MLOPS_ONLINE_STORE_URL)"
    )
    ma.add_argument("--model", required=True)
    ma.add_argument(
        "--data", default=None, help="folder or s3:// prefix of the history tables (default: the config's)"
    )
    ma.add_argument("--version", default=None, help="whose SQL computes them (default: production)")
    ma.add_argument(
        "--upsert",
        action="store_true",
        help="replace only these entities' features (a partition), keep everyone else's",
    )
    ma.set_defaults(handler=_materialize)


def _add_monitor(sub: _Subcommands) -> None:
    """The `mlops monitor` subcommand."""
    mo = sub.add_parser("monitor", help="drift and quality of a predictions partition; email on a breach")
    mo.add_argument("--model", required=True)
    mo.add_argument(
        "--current", default=None, help="predictions partition (default: the newest complete one)"
    )
    mo.add_argument(
        "--reference", default=None, help="model input rows to compare with (default: the version's)"
    )
    mo.add_argument("--labels", default=None, help="labels file or folder keyed by the entity id")
    mo.add_argument("--no-email", action="store_true", help="measure and report, send nothing")
    mo.set_defaults(handler=_monitor)


def _add_promote(sub: _Subcommands) -> None:
    """The `mlops promote` subcommand: a version, or the challenger."""
    pr = sub.add_parser("promote", help="point the production alias at a version (previous keeps the old)")
    pr.add_argument("--model", required=True)
    which = pr.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="the registry version to promote")
    which.add_argument(
        "--from", dest="source", choices=["challenger"], help="promote the version the challenger alias names"
    )
    pr.add_argument("--reason", default=None)
    pr.set_defaults(handler=_promote)


def _add_archive_challenger(sub: _Subcommands) -> None:
    """The `mlops archive-challenger` subcommand."""
    help_text = "stop shadowing: park the challenger alias on production"
    _add_alias_move(sub, "archive-challenger", help_text, _archive_challenger)


def _add_alias_move(
    sub: _Subcommands, name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
) -> None:
    """A registry move that takes only the model and a reason (archive-challenger, rollback)."""
    move = sub.add_parser(name, help=help_text)
    move.add_argument("--model", required=True)
    move.add_argument("--reason", default=None)
    move.set_defaults(handler=handler)


def _add_answers(sub: _Subcommands) -> None:
    """The `mlops approve` and `mlops reject` subcommands (one handler, _answer)."""
    for verb in ("approve", "reject"):
        an = sub.add_parser(verb, help=f"{verb} a run's waiting promotion (Airflow REST API, as yourself)")
        an.add_argument("--model", required=True)
        an.add_argument("--run", required=True, help="the Airflow run id (the UI's Run ID, e.g. manual__...)")
        an.add_argument("--comment", default=None, help="recorded in the audit trail with your name")
        an.add_argument("--dag", default=None, help="default <model>_training; <model>_registry for its runs")
        an.set_defaults(handler=_answer)


def _add_rollback(sub: _Subcommands) -> None:
    """The `mlops rollback` subcommand."""
    _add_alias_move(sub, "rollback", "move production back to the previous version", _rollback)


def _add_sign(sub: _Subcommands) -> None:
    """The `mlops sign` subcommand."""
    sg = sub.add_parser(
        "sign", help="check a version's signature, then re-sign it with MLOPS_MODEL_SIGNING_KEY (rotation)"
    )
    sg.add_argument("--model", required=True)
    sg.add_argument("--version", required=True)
    sg.add_argument("--check", action="store_true", help="only verify the signature, change nothing")
    sg.set_defaults(handler=_sign)


def _add_history(sub: _Subcommands) -> None:
    """The `mlops history` subcommand."""
    hi = sub.add_parser("history", help="print every recorded move of the production alias")
    hi.add_argument("--model", required=True)
    hi.set_defaults(handler=_history)


def _add_admin(sub: _Subcommands) -> None:
    """The MLflow admin's subcommands: `mlops registry-access` and `mlops webhook`."""
    ra = sub.add_parser(
        "registry-access",
        help="as the MLflow admin: create the workers' and serving users and their grants (idempotent)",
    )
    ra.set_defaults(handler=_registry_access)

    wh = sub.add_parser(
        "webhook",
        help="as the MLflow admin: register the alias webhook that makes serving reload (idempotent)",
    )
    wh.add_argument(
        "--url",
        required=True,
        help="serving's internal endpoint, e.g. http://serving:8000/internal/registry-events",
    )
    wh.set_defaults(handler=_webhook)


def known_errors(command: str) -> tuple[type[Exception], ...]:
    """The exception classes `command` reports as a one-line error (the registry's by default)."""
    classes: list[type[Exception]] = [ValueError]
    for name in (*_ALWAYS, *_ERRORS.get(command, _REGISTRY)):
        module, _, attr = name.partition(":")
        classes.append(getattr(importlib.import_module(module), attr))
    return tuple(classes)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the mlops command."""
    from tabular_mlops.config import ConfigError

    args = build_parser().parse_args(argv)
    known = known_errors(args.command)
    try:
        return int(args.handler(args))
    except known as exc:
        print(f"mlops {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
