"""Time the shadow challenger's batch cost and its comparison: `make bench-challenger`.

1. Batch scoring: trains two churn versions on generated data into a throw-away registry, then
   scores one generated Telco partition (--rows) with production alone and with the other
   version as `challenger`, the real path (`score_partition`), and reports both times.
2. The comparison: `shadow_compare.compare` (the gate's paired bootstrap, 1,000 rounds, the
   config default) on synthetic labelled rows at several sizes.
Prints one JSON line and writes it to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_scoring import scratch_environment
from tabular_mlops.config import get_model_config
from tabular_mlops.generators.telco import generate_telco


def _scoring(work: Path, rows: int) -> dict[str, Any]:
    from tabular_mlops import registry
    from tabular_mlops.pipeline import run_training_chain
    from tabular_mlops.scoring import score_partition

    config = get_model_config("churn")
    versions = []
    for seed in (1, 2):
        generate_telco(work / f"train{seed}", rows=3000, seed=seed)
        result = run_training_chain(config, str(work / f"train{seed}"), run_id=f"bench_{seed}", promote=False)
        versions.append(str(result["version"]))
    name = result["registered_name"]
    registry.promote(name, versions[0], "benchmark", reason="challenger benchmark")
    incoming = work / "lake" / "incoming" / "churn" / "dt=2026-11-20"
    generate_telco(incoming, rows=rows, seed=7)
    out: dict[str, Any] = {"rows": rows, "versions": versions}
    for label in ("champion_only", "with_challenger"):
        if label == "with_challenger":
            registry.set_challenger(name, versions[1], "benchmark", reason="challenger benchmark")
        started = time.perf_counter()
        summary = score_partition(
            config, str(incoming), str(work / "lake" / "predictions" / "churn" / label), day="2026-11-20"
        )
        out[f"{label}_seconds"] = round(time.perf_counter() - started, 1)
        out[f"{label}_challenger"] = summary["challenger"]
    return out


def _comparison(sizes: list[int]) -> list[dict[str, Any]]:
    from tabular_mlops.shadow_compare import compare

    rng = np.random.default_rng(0)
    timings = []
    for n in sizes:
        y = rng.integers(0, 2, size=n)
        champion = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 2.0, size=n))))
        challenger = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.9, size=n))))
        started = time.perf_counter()
        result = compare(y, champion, challenger, minimum=500, rounds=1000)
        seconds = round(time.perf_counter() - started, 2)
        timings.append(
            {"rows": n, "seconds": seconds, "verdict": result["verdict"], "interval": result["interval"]}
        )
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the scored partition")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-challenger-") as tmp:
        work = Path(tmp)
        scratch_environment(work)
        os.environ["MLOPS_LAKE"] = str(work / "lake")
        result = {
            "cpus": os.cpu_count(),
            "scoring": _scoring(work, args.rows),
            "comparison": _comparison([10_000, 100_000, 307_511]),
        }
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
