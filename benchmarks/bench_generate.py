"""Time the Home Credit generator and report its peak memory: `make bench ROWS=307511`.

Prints one JSON line: rows written per file, seconds, rows per second and the peak resident set
size of the process, which must stay flat as --rows grows (the tables stream chunk by chunk).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from tabular_mlops.generators.home_credit import generate_home_credit


def main() -> None:
    """Generate once into a temporary folder (or --out) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=307_511, help="training applicants (real: 307,511)")
    parser.add_argument("--out", default=None, help="keep the files here instead of a temporary folder")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-home-credit-"))
    started = time.perf_counter()
    counts = generate_home_credit(out, rows=args.rows, seed=0, progress=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.iterdir())
    if not args.out:
        shutil.rmtree(out)
    total = sum(counts.values())
    print(
        json.dumps(
            {
                "rows": args.rows,
                "files": counts,
                "total_rows": total,
                "csv_gb": round(size / 1e9, 2),
                "seconds": round(seconds, 1),
                "rows_per_second": round(total / seconds),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


if __name__ == "__main__":
    main()
