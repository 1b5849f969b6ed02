"""Serving latency and throughput: `make bench-serving` (needs `wrk`: `apt-get install wrk`).

Trains a churn and a credit_risk version on generated data into a throw-away registry, then, one
after the other on this machine and with the same load generator (wrk, 2 threads):
- the bundle's service (gunicorn, `SERVING_WORKERS` uvicorn workers, default 2),
- MLflow's own `mlflow models serve` (uvicorn, 1 worker, its default) on the same versions,
and measures p50/p95/p99 and requests/s for single-record requests at concurrency 1, 8 and 32
and for 100-record batches at concurrency 8. churn requests are raw Telco records on both.
credit_risk requests to the bundle hold the application with its full history (the service
computes the 516 features with the feature SQL); MLflow's server gets the precomputed feature
row, because that is what the logged credit_risk pyfunc takes. Shadow scoring: the bundle's cells
are measured four times on the same service, with shadow off, on, on, off (a challenger per model,
a second version of the same run, scoring every answered request; ABBA so a steady drift in the
machine's load cancels out), and `bundle_shadow.champion` gives the champion's mean p50/p99 off
and on with the p99 change. Prints one JSON document and writes it to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_scoring import _train_and_promote, forget_online_keys, scratch_environment

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # the serving package and the tests' helpers live at the root
from tests.helpers import free_port, wait_until_ok  # noqa: E402 - needs the path above

BIN = Path(sys.executable).parent
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "r"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p95_ms": %.2f, ' ..
    '"p99_ms": %.2f, "errors": %d}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3,
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in frame.to_dict(orient="records")]


def _bodies(work: Path, registry_versions: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Request bodies per model: bundle single/batch and MLflow single/batch."""
    import mlflow
    from tabular_mlops.config import get_model_config
    from tabular_mlops.generators.home_credit import generate_home_credit
    from tabular_mlops.generators.telco import FILE_NAME, generate_telco
    from tabular_mlops.materialize import materialize_location

    telco_dir, credit_dir = work / "req" / "telco", work / "req" / "home_credit"
    generate_telco(telco_dir, rows=400, seed=7)
    generate_home_credit(credit_dir, rows=400, seed=7)
    # The requesting applicants' history goes to the online store, as the scoring DAG's upsert
    # would put it there: id-only requests then read the history the full requests carry.
    materialize_location(get_model_config("credit_risk"), str(credit_dir), upsert=True)
    telco = pd.read_csv(telco_dir / FILE_NAME).drop(columns=["Churn"])
    churn = _records(telco.head(100))

    config = get_model_config("credit_risk")
    applications = pd.read_csv(credit_dir / "application_test.csv").head(100)
    history = {
        t: pd.read_csv(credit_dir / s.file)
        for t, s in config.data.tables.items()
        if t not in ("application_train", "application_test")
    }
    credit = []
    for application in _records(applications):
        key = application["SK_ID_CURR"]
        request: dict[str, Any] = {"application": application}
        for table, frame in history.items():
            if "SK_ID_CURR" in frame:
                request[table] = _records(frame[frame["SK_ID_CURR"] == key])
        bureau_ids = {r["SK_ID_BUREAU"] for r in request["bureau"]}
        request["bureau_balance"] = _records(
            history["bureau_balance"][history["bureau_balance"]["SK_ID_BUREAU"].isin(bureau_ids)]
        )
        credit.append(request)
    sizes = [sum(len(v) for k, v in r.items() if k != "application") for r in credit]
    typical = int(np.argsort(sizes)[len(sizes) // 2])  # the median applicant by history size

    # MLflow's server takes what each logged pyfunc takes: the raw record for churn, the
    # feature row for credit_risk (computed here with the version's own SQL).
    model = mlflow.pyfunc.load_model(f"models:/credit-risk-classifier/{registry_versions['credit_risk']}")
    classifier = model.unwrap_python_model()
    from serving.lean import LeanScorer

    features = LeanScorer(config, classifier).features(credit)
    # The signature asks for the entity key too (it is part of the feature row).
    columns = [config.features.entity_key, *classifier.feature_columns]
    feature_rows = pd.DataFrame({c: features[c] for c in columns})
    return {
        "churn": {
            "bundle_single": churn[0],
            "bundle_batch": churn,
            "mlflow_single": {"dataframe_records": churn[:1]},
            "mlflow_batch": {"dataframe_records": churn},
        },
        "credit_risk": {
            "bundle_single": credit[typical],
            "bundle_batch": credit,
            # The same applicants by id: the application alone, the history from the online store.
            "id_single": {"application": credit[typical]["application"]},
            "id_batch": [{"application": c["application"]} for c in credit],
            "mlflow_single": {"dataframe_records": _records(feature_rows.iloc[[typical]])},
            "mlflow_batch": {"dataframe_records": _records(feature_rows)},
            "history_rows_single": sizes[typical],
            "history_rows_batch": int(sum(sizes)),
        },
    }


def _load(url: str, body: Any, connections: int, seconds: int, work: Path) -> dict[str, Any]:
    path = work / f"body-{abs(hash(url))}-{connections}.json"
    path.write_text(json.dumps(body))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    threads = min(2, connections)
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s"]
    out = subprocess.run(  # noqa: S603 - wrk with argv built here, no shell
        [*command, "-s", str(script), url],
        env={**os.environ, "BENCH_BODY": str(path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["requests_per_second"] = round(result["requests"] / result["seconds"], 1)
    return result


def _measure(
    base: str, routes: dict[str, str], bodies: dict[str, Any], kind: str, args: Any, work: Path
) -> Any:
    figures: dict[str, Any] = {}
    for model, url in routes.items():
        cells = {}
        for connections in (1, 8, 32):
            cells[f"single_c{connections}"] = _load(
                base + url, bodies[model][f"{kind}_single"], connections, args.seconds, work
            )
        cells["batch100_c8"] = _load(base + url, bodies[model][f"{kind}_batch"], 8, args.seconds, work)
        figures[model] = cells
        print(model, kind, json.dumps(cells), file=sys.stderr)
    return figures


# credit_risk by applicant id (the history from the online store): (cell, query, connections, body).
ONLINE_CELLS = [
    ("id_c1", "", 1, "id_single"),
    ("id_c8", "", 8, "id_single"),
    ("id_c32", "", 32, "id_single"),
    ("id_explain3_c1", "?explain=3", 1, "id_single"),
    ("id_explain3_c8", "?explain=3", 8, "id_single"),
    ("id_batch100_c8", "", 8, "id_batch"),
]


def _measure_online(base: str, bodies: dict[str, Any], args: Any, work: Path) -> dict[str, Any]:
    """The credit_risk cells that send only the application (the bundle alone can serve them)."""
    route = f"{base}/v1/models/credit_risk/predict"
    cells = {
        cell: _load(route + query, bodies["credit_risk"][body], connections, args.seconds, work)
        for cell, query, connections, body in ONLINE_CELLS
    }
    print("credit_risk online", json.dumps(cells), file=sys.stderr)
    return cells


def _warm(base: str, bodies: dict[str, Any], online: bool) -> None:
    """A few requests of every kind first: the first batches pay for sessions, caches and imports."""
    import httpx

    kinds = [(m, "bundle_single", "") for m in ("churn", "credit_risk")]
    kinds += [(m, "bundle_batch", "") for m in ("churn", "credit_risk")]
    if online:
        kinds += [("credit_risk", "id_single", ""), ("credit_risk", "id_single", "?explain=3")]
    for model, body, query in kinds:
        for _ in range(10):
            url = f"{base}/v1/models/{model}/predict{query}"
            httpx.post(url, json=bodies[model][body], timeout=60).raise_for_status()


def _mean_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model and cell, the mean of each figure over measurement rounds (errors summed)."""
    out: dict[str, Any] = {}
    for model, cells in rounds[0].items():
        for cell, first in cells.items():
            values = [r[model][cell] for r in rounds]
            out.setdefault(model, {})[cell] = {
                k: (
                    sum(v[k] for v in values)
                    if k == "errors"
                    else round(float(np.mean([v[k] for v in values])), 2)
                )
                for k in first
            }
    return out


def _old_and_new(old: str, new: str, bodies: dict[str, Any], args: Any, work: Path) -> dict[str, Any]:
    """The same cells on an older commit's service and on this one: new, old, old, new (ABBA, so a
    steady drift in the machine's load cancels out); each side's figures are its rounds' means."""
    routes = {m: f"/v1/models/{m}/predict" for m in ("churn", "credit_risk")}
    sides: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for side in ("new", "old", "old", "new"):
        sides[side].append(_measure(old if side == "old" else new, routes, bodies, "bundle", args, work))
    return {side: _mean_rounds(rounds) for side, rounds in sides.items()}


def _register_challengers(versions: dict[str, str]) -> dict[str, str]:
    """A second, signed version of each model from its champion's run, set as `challenger`.

    Same model, same cost: what the shadow figures measure is the champion's latency while a
    challenger scores every answered request beside it."""
    from mlflow import MlflowClient
    from tabular_mlops import registry, signing, tracking
    from tabular_mlops.config import get_model_config

    client = MlflowClient()
    challengers = {}
    for model, version in versions.items():
        name = tracking.registered_name(get_model_config(model).model.registered_name)
        champion = client.get_model_version(name, version)
        made = client.create_model_version(name, source=champion.source, run_id=champion.run_id)
        signing.sign(name, str(made.version))
        registry.set_challenger(name, str(made.version), "benchmark", reason="shadow benchmark")
        challengers[model] = str(made.version)
    return challengers


def _wait_for_challengers(base: str, challengers: dict[str, str], timeout: float = 180) -> None:
    """Until 20 /health answers in a row (both workers, by all odds) show these challengers (None: none)."""
    import time

    import httpx

    deadline, streak = time.monotonic() + timeout, 0
    while streak < 20:
        if time.monotonic() > deadline:
            sys.exit(f"challengers {challengers} not loaded by every worker in {timeout:.0f} s")
        shown = httpx.get(f"{base}/health", timeout=10).json()["challengers"]
        loaded = all(shown[m].get("version") == v for m, v in challengers.items())
        streak = streak + 1 if loaded else 0
        time.sleep(0.25)


def _shadow_counts(base: str) -> dict[str, dict[str, float]]:
    """serving_shadow_records by model and outcome, summed over the workers."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "serving_shadow_records_total":
                model, outcome = sample.labels["model"], sample.labels["outcome"]
                counts.setdefault(model, {})[outcome] = sample.value
    return counts


def _shadow_effect(off: list[dict[str, Any]], on: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model and cell: the champion's mean p50/p99 over the off and the on rounds, p99 change in %."""
    effect: dict[str, Any] = {}
    for model, cells in on[0].items():
        for cell in cells:
            row = {}
            for figure in ("p50_ms", "p99_ms"):
                row[figure] = [
                    round(float(np.mean([r[model][cell][figure] for r in rounds])), 2) for rounds in (off, on)
                ]
            row["p99_change_pct"] = round(100 * (row["p99_ms"][1] / row["p99_ms"][0] - 1), 1)
            effect.setdefault(model, {})[cell] = row
    return effect


def _shadow_rounds(
    base: str, versions: dict[str, str], bodies: dict[str, Any], args: Any, work: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The champion's latency with shadow off, on, on, off on one service (ABBA: a steady drift in
    the machine's load cancels out); returns the first off round and the shadow figures."""
    from tabular_mlops import registry, tracking
    from tabular_mlops.config import get_model_config

    routes = {m: f"/v1/models/{m}/predict" for m in versions}
    off = [_measure(base, routes, bodies, "bundle", args, work)]
    challengers = _register_challengers(versions)
    _wait_for_challengers(base, challengers)
    on = [_measure(base, routes, bodies, "bundle", args, work) for _ in range(2)]
    counts = _shadow_counts(base)
    for model in versions:
        name = tracking.registered_name(get_model_config(model).model.registered_name)
        registry.archive_challenger(name, "benchmark", reason="shadow benchmark: off again")
    _wait_for_challengers(base, dict.fromkeys(versions))
    off.append(_measure(base, routes, bodies, "bundle", args, work))
    shadow = {
        "challengers": challengers,
        "order": "off, on, on, off",
        "records": counts,
        "champion": _shadow_effect(off, on),
        "rounds": {"off": off, "on": on},
    }
    return off[0], shadow


def _failed_cells(figures: dict[str, Any], versions: dict[str, str]) -> list[str]:
    """Every measured cell with failed requests, named by side, model and cell."""
    sides: list[tuple[str, dict[str, Any]]] = [
        ("bundle", figures["bundle"]),
        ("bundle online", {"credit_risk": figures["bundle_online"]}),
        ("mlflow_models_serve", figures["mlflow_models_serve"]),
    ]
    for name, rounds in figures.get("bundle_shadow", {}).get("rounds", {}).items():
        sides += [(f"shadow {name} {i}", r) for i, r in enumerate(rounds)]
    for name in ("old", "new"):
        if "old_and_new" in figures:
            sides.append((f"{name} commit", figures["old_and_new"][name]))
    return [
        f"{side} {model} {cell}: {result['errors']} failed requests"
        for side, figure in sides
        for model, cells in figure.items()
        if model in versions
        for cell, result in cells.items()
        if result["errors"]
    ]


def _start_old(args: Any, env: dict[str, str], work: Path) -> tuple[str, subprocess.Popen]:
    """The older commit's service on the same registry (its code and configs, this venv)."""
    port = free_port()
    checkout = Path(args.old).resolve()
    process = subprocess.Popen(  # noqa: S603 - the venv's gunicorn, fixed argv
        [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:app"],
        cwd=checkout,
        env={
            **env,
            "PYTHONPATH": f"{checkout / 'plugins'}{os.pathsep}{checkout}",
            "MLOPS_PROJECT_DIR": str(checkout),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "SERVING_WORKERS": str(args.workers),
            "SERVING_RELOAD_SECONDS": "30",
            "MLOPS_LAKE": str(work / "lake-old"),
        },
    )
    return f"http://127.0.0.1:{port}", process


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    """Train, serve with the bundle and with MLflow, load both with wrk; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the bundle service")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--old",
        default=None,
        help="a checkout of an older commit (git worktree): its service is measured beside this one",
    )
    parser.add_argument(
        "--shadow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the champion with a shadow challenger on and off (four rounds)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_serving needs wrk on PATH (Debian/Ubuntu: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    scratch_environment(work)
    from tabular_mlops.generators.home_credit import generate_home_credit
    from tabular_mlops.generators.telco import generate_telco

    generate_telco(work / "train" / "telco", rows=3000, seed=1)
    generate_home_credit(work / "train" / "home_credit", rows=3000, seed=1)
    versions = {
        "churn": _train_and_promote("churn", str(work / "train" / "telco")),
        "credit_risk": _train_and_promote("credit_risk", str(work / "train" / "home_credit")),
    }
    bodies = _bodies(work, versions)
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "SERVING_LOG_LEVEL": "warning",
        # `mlflow models serve` starts `uvicorn` by name: the virtualenv's bin must be on PATH.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    figures: dict[str, Any] = {"cpus": os.cpu_count(), "versions": versions, "load_generator": "wrk -t2"}
    figures["credit_risk_history_rows"] = {
        "single": bodies["credit_risk"]["history_rows_single"],
        "batch100": bodies["credit_risk"]["history_rows_batch"],
    }
    try:
        port = free_port()
        bundle = subprocess.Popen(  # noqa: S603 - the venv's gunicorn, fixed argv
            [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:app"],
            cwd=PROJECT,
            env={
                **env,
                "PORT": str(port),
                "HOST": "127.0.0.1",
                "SERVING_WORKERS": str(args.workers),
                "SERVING_RELOAD_SECONDS": "2",  # the challengers set mid-run are loaded within seconds
                "MLOPS_LAKE": str(work / "lake"),  # where the shadow rows go
            },
        )
        old = _start_old(args, env, work) if args.old else None
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_ok(f"{base}/ready", bundle)
            _warm(base, bodies, online=True)
            figures["bundle_online"] = _measure_online(base, bodies, args, work)
            if old is not None:
                wait_until_ok(f"{old[0]}/ready", old[1])
                _warm(old[0], bodies, online=False)
                figures["old_and_new"] = {"old": args.old, **_old_and_new(old[0], base, bodies, args, work)}
            if args.shadow:
                figures["bundle"], figures["bundle_shadow"] = _shadow_rounds(
                    base, versions, bodies, args, work
                )
            else:
                routes = {m: f"/v1/models/{m}/predict" for m in versions}
                figures["bundle"] = _measure(base, routes, bodies, "bundle", args, work)
            figures["bundle"]["workers"] = args.workers
        finally:
            _stop(bundle)
            if old is not None:
                _stop(old[1])
        figures["mlflow_models_serve"] = {"workers": 1}
        for model, name in (("churn", "churn-classifier"), ("credit_risk", "credit-risk-classifier")):
            port = free_port()
            reference = subprocess.Popen(  # noqa: S603 - the venv's mlflow, fixed argv
                [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/{versions[model]}"]
                + ["-p", str(port), "-h", "127.0.0.1", "--env-manager", "local"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until_ok(f"http://127.0.0.1:{port}/ping", reference)
                one = _measure(
                    f"http://127.0.0.1:{port}", {model: "/invocations"}, bodies, "mlflow", args, work
                )
                figures["mlflow_models_serve"][model] = one[model]
            finally:
                _stop(reference)
        failed = _failed_cells(figures, versions)
        print(json.dumps(figures))
        if failed:  # a latency of failed requests means nothing: refuse to record it
            sys.exit("requests failed, figures not saved:\n" + "\n".join(failed))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        forget_online_keys()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
