"""Worker memory under hostile uploads: 20 concurrent 100 MB JSON bodies against gunicorn (2 workers).

Four rounds per server: without a key (Content-Length declared, then chunked), with the key but
oversized (Content-Length declared, then chunked). Each worker's VmRSS before and VmHWM (peak,
reset before each round, sampled during it) come from /proc/<pid>/status. Acceptance: every worker
within +50 MB where the headers decide; a chunked body with the key is read until the limit or the
worker's in-flight budget (SERVING_MAX_INFLIGHT_BYTES), so there the bound is that budget.
With --old <checkout> the same rounds run against another checkout of the bundle
(e.g. `git worktree add /tmp/old ac36bd5`) for the before figure, in the same run.

The registry is empty: the routes exist (they come from the configs), so the figures show what a
request costs before any scoring. The bodies stream from a generator; nothing holds 100 MB here.
A memory guard stops a server whose host falls below --min-available-mb (the old code may need GBs).

    python benchmarks/bench_uploads.py --json benchmarks/uploads.json --old /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # the tests' helpers live at the root
from tests.helpers import free_port, wait_until_ok  # noqa: E402 - needs the path above

BIN = Path(sys.executable).parent
KEY = "bench-uploads-key"
MB = 1024 * 1024
CHUNK = 256 * 1024
ACCEPT_MB = 50
# (name, headers, chunked). The first three are decided from the headers alone and must stay within
# ACCEPT_MB; an authenticated chunked body has no size to judge by: it is read up to the limit.
ROUNDS = (
    ("unauthenticated", "none", False),
    ("unauthenticated_chunked", "none", True),
    ("authenticated_oversized", "auth", False),
    ("authenticated_oversized_chunked", "auth", True),
)
DECIDED_BY_HEADERS = ("unauthenticated", "unauthenticated_chunked", "authenticated_oversized")
# One churn-shaped record, repeated: a body FastAPI would decode into millions of Python objects.
RECORD = json.dumps(
    {"customerID": "7590-VHVEG", "gender": "Female", "SeniorCitizen": 0, "tenure": 1, "MonthlyCharges": 29.85}
).encode()


def body(total: int) -> Iterator[bytes]:
    """A JSON list of records exactly `total` bytes long, yielded in pieces of about CHUNK bytes."""
    item = RECORD + b","
    count = (total - 2 - len(RECORD)) // len(item)
    per_chunk = max(1, CHUNK // len(item))
    yield b"["
    for start in range(0, count, per_chunk):
        yield item * min(per_chunk, count - start)
    # Spaces are JSON whitespace: they make the length exact.
    yield RECORD + b" " * (total - 2 - len(RECORD) - count * len(item)) + b"]"


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs), so a round's peak is its own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def workers(master: int) -> list[int]:
    """The gunicorn worker pids (the master's children)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def available_mb() -> float:
    """MemAvailable of the host, in MB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def upload(url: str, size: int, headers: dict[str, str], chunked: bool) -> str:
    """POST one streamed body; the status the server answered, or the error the client saw."""
    if not chunked:
        headers = {**headers, "Content-Length": str(size)}
    try:
        response = httpx.post(url, content=body(size), headers=headers, timeout=600)
        return str(response.status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def start(checkout: Path, port: int, workdir: Path) -> subprocess.Popen:
    """gunicorn from `checkout` (its own packages first on the path) on 127.0.0.1:port, empty registry."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{checkout / 'plugins'}{os.pathsep}{checkout}",
        "MLOPS_PROJECT_DIR": str(checkout),
        "MLOPS_DATA_DIR": str(workdir / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'empty.db'}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SERVING_WORKERS": "2",
        "SERVING_API_KEY": KEY,
        "SERVING_RELOAD_SECONDS": "3600",
        "SERVING_LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
    }
    log = (workdir / "gunicorn.log").open("w")
    return subprocess.Popen(  # noqa: S603 - the venv's gunicorn with fixed arguments
        [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:app"],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def wait_for_workers(url: str, count: int, timeout: float = 180) -> None:
    """Until `count` distinct workers have answered /health (each finished its start-up)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only workers {sorted(seen)} answered /health in {timeout:.0f}s")
        try:
            with httpx.Client() as client:  # a new connection each time reaches either worker
                seen.add(int(client.get(f"{url}/health", timeout=10).json()["pid"]))
        except httpx.HTTPError:
            pass  # a worker still busy or starting
        time.sleep(0.2)


def guard_memory(
    process: subprocess.Popen, floor_mb: float, stop: threading.Event, tripped: list[float]
) -> None:
    """Kill the server if the host runs low on memory (the old code can take GBs)."""
    while not stop.wait(0.2):
        if available_mb() < floor_mb:
            tripped.append(available_mb())
            process.kill()
            return


class Sampler(threading.Thread):
    """Each worker's peak during a round: VmHWM while it lives, so a worker that dies still counts."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.peak = {pid: 0.0 for pid in pids}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.sample()

    def sample(self) -> None:
        """Read every live worker's VmHWM once."""
        for pid in self.peak:
            try:
                self.peak[pid] = max(self.peak[pid], memory(pid)["VmHWM"])
            except (FileNotFoundError, ProcessLookupError, KeyError):
                pass  # gone (a zombie has no VmHWM): its last reading stays


def round_of(
    url: str, pids: list[int], args: argparse.Namespace, headers: dict[str, str], chunked: bool
) -> dict:
    """One round of concurrent uploads; per worker RSS before/after and the peak, and the answers."""
    for pid in pids:
        reset_peak(pid)
    before = {pid: memory(pid) for pid in pids}
    sampler = Sampler(pids)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(args.uploads) as pool:
        answers = list(pool.map(lambda _: upload(url, args.mb * MB, headers, chunked), range(args.uploads)))
    seconds = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    sampler.sample()
    per_worker: dict[str, Any] = {}
    for pid in pids:
        try:
            after: float | None = memory(pid)["VmRSS"]
        except (FileNotFoundError, KeyError):  # killed (gunicorn's timeout, the memory guard) mid-round
            after = None
        per_worker[str(pid)] = {
            "rss_before_mb": round(before[pid]["VmRSS"], 1),
            "rss_after_mb": round(after, 1) if after is not None else "worker died",
            "peak_mb": round(sampler.peak[pid], 1),
            "peak_growth_mb": round(sampler.peak[pid] - before[pid]["VmRSS"], 1),
        }
    return {
        "answers": {a: answers.count(a) for a in sorted(set(answers))},
        "seconds": round(seconds, 1),
        "workers": per_worker,
        "within_50_mb": all(
            w["peak_growth_mb"] <= ACCEPT_MB and w["rss_after_mb"] != "worker died"
            for w in per_worker.values()
        ),
    }


def bench(checkout: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The four rounds against one checkout's server."""
    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp:
        workdir = Path(tmp)
        (workdir / "metrics").mkdir()
        port = free_port()
        process = start(checkout, port, workdir)
        stop, tripped = threading.Event(), list[float]()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ok(f"{url}/health", process)
            wait_for_workers(url, 2)
            pids = workers(process.pid)
            threading.Thread(
                target=guard_memory, args=(process, args.min_available_mb, stop, tripped)
            ).start()
            predict = f"{url}/v1/models/churn/predict"
            auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            rounds = {}
            for name, who, chunked in ROUNDS:
                headers = auth if who == "auth" else {"Content-Type": "application/json"}
                rounds[name] = round_of(predict, pids, args, headers, chunked)
                wait_for_workers(url, 2)  # gunicorn replaces a killed worker: measure the new one next
                pids = workers(process.pid)
                if tripped:
                    rounds[name]["memory_guard"] = f"server killed: host MemAvailable {tripped[0]:.0f} MB"
                    break
            log = (workdir / "gunicorn.log").read_text(errors="replace").splitlines()
            killed = [line for line in log if re.search(r"WORKER TIMEOUT|SIGKILL|out of memory", line)]
            return {"checkout": str(checkout), "rounds": rounds, "worker_kills_logged": killed[:10]}
        finally:
            stop.set()
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    """Run the rounds (and against --old for the before figure); print and save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--mb", type=int, default=100, help="size of each upload in MB")
    parser.add_argument("--old", type=Path, help="another checkout to measure the same way (before figure)")
    parser.add_argument("--min-available-mb", type=float, default=4096)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    figures: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/bench_uploads.py", *sys.argv[1:]]),
        "uploads": args.uploads,
        "upload_mb": args.mb,
        "gunicorn_workers": 2,
        "acceptance": (
            f"each worker's peak RSS within +{ACCEPT_MB} MB of its RSS before, for the rounds decided "
            "from the headers; authenticated chunked: within the in-flight budget (128 MiB) + 50 MB"
        ),
        "cpus": os.cpu_count(),
    }
    if args.old is not None:
        figures["old"] = bench(args.old.resolve(), args)
    figures["new"] = bench(PROJECT, args)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if not all(figures["new"]["rounds"][name]["within_50_mb"] for name in DECIDED_BY_HEADERS):
        sys.exit(f"a worker grew by more than {ACCEPT_MB} MB")
    # A chunked body has no size to judge by: a worker reads bodies up to its in-flight budget.
    bound = 2 * 64 + ACCEPT_MB  # SERVING_MAX_INFLIGHT_BYTES default (2 x 64 MiB) + the same slack
    chunked = figures["new"]["rounds"]["authenticated_oversized_chunked"]["workers"].values()
    if any(w["peak_growth_mb"] > bound for w in chunked):
        sys.exit(f"an authenticated chunked upload grew a worker past its in-flight budget (+{bound} MB)")


if __name__ == "__main__":
    main()
