"""`make airflow`: the four Airflow processes on a private home, logged into and stopped by Ctrl-C.

The launcher runs as a user runs it (`python -m tabular_mlops.local_airflow`), on a temporary
AIRFLOW_HOME (--home) and a free port, so the developer's `.airflow/` is never touched.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest
from tabular_mlops import local_airflow
from tabular_mlops.config import load_model_configs

from tests.helpers import free_port

pytestmark = pytest.mark.slow
READY_TIMEOUT = 300  # migrate a fresh DB, then the api-server's start: about 30 s on 2 CPUs
PARSE_TIMEOUT = 240  # the dag-processor's first pass over dags/


class Launcher:
    """The launcher's process and the stdout lines it printed (read by a thread, never blocking)."""

    def __init__(self, home: Path, port: int, tmp: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
        # Everything the DAGs could write goes under tmp; conftest's UNIT_TEST_MODE is not passed on.
        env.update(MLOPS_DATA_DIR=str(tmp / "data"), MLOPS_REPORTS_DIR=str(tmp / "reports"))
        env["MLOPS_MLFLOW_DIR"] = str(tmp / "mlruns")
        command = [sys.executable, "-m", "tabular_mlops.local_airflow", "--port", str(port)]
        self.process = subprocess.Popen(
            [*command, "--home", str(home)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own group: the test's Ctrl-C is a signal sent to it alone
        )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        """Collect the launcher's lines until it closes its stdout."""
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        """Everything printed so far."""
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first printed line matching `pattern`; fails when the launcher exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            assert self.process.poll() is None, f"launcher exited {self.process.returncode}:\n{self.output}"
            time.sleep(0.5)
        raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f}s:\n{self.output}")


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[tuple[Launcher, Path, int]]:
    """The launcher on a fresh home and port. After the test, whatever it did, the launcher (with
    its tree) and every process left on the home are killed: nothing outlives the test."""
    home, port = tmp_path / "airflow", free_port()
    started = Launcher(home, port, tmp_path)
    try:
        yield started, home, port
    finally:
        if started.process.poll() is None:
            try:
                tree = psutil.Process(started.process.pid).children(recursive=True)
                local_airflow.kill_processes([psutil.Process(started.process.pid), *tree], timeout=30)
            except psutil.NoSuchProcess:
                pass
            started.process.wait(timeout=30)
        local_airflow.kill_processes(
            _on_home(home), timeout=30
        )  # also what a launcher that exited left behind
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            log = home / "logs" / "local" / f"{name}.log"
            if log.exists():
                print(f"--- {name} ---\n{log.read_text(errors='replace')[-3000:]}")


def _token(base: str, password: str) -> str:
    """A JWT from the simple auth manager's login endpoint, as the UI's login form gets one."""
    response = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


def _wait_for_dags(base: str, headers: dict[str, str], expected: set[str]) -> dict[str, Any]:
    """GET /api/v2/dags until every expected DAG is there (the dag-processor's first pass)."""
    deadline, found = time.monotonic() + PARSE_TIMEOUT, set()
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/api/v2/dags", headers=headers, params={"limit": 100}, timeout=30)
        assert response.status_code == 200, response.text
        dags = {d["dag_id"]: d for d in response.json()["dags"]}
        if expected <= (found := set(dags)):
            return dags
        time.sleep(2)
    raise AssertionError(f"DAGs missing after {PARSE_TIMEOUT}s: {sorted(expected - found)}")


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie is dead, only not yet reaped by whoever adopted it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _on_home(home: Path) -> list[psutil.Process]:
    """Every live process of this machine whose AIRFLOW_HOME is `home`: helpers started late too."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("AIRFLOW_HOME") == str(home) and _running(process):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _left_running(tree: list[psutil.Process], home: Path, timeout: float = 10) -> list[str]:
    """What of `tree`, or of anything else on `home`, still runs after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {p.pid: p for p in tree if _running(p)} | {p.pid: p for p in _on_home(home)}
        if not alive or time.monotonic() > deadline:
            return [f"{pid} {' '.join(p.cmdline()[:3])}" for pid, p in alive.items() if _running(p)]
        time.sleep(0.5)


def _stamps(log: Path, text: str = "") -> list[datetime]:
    """The timestamps that open the log's lines containing `text`."""
    stamp = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z")
    lines = log.read_text(errors="replace").splitlines()
    return [datetime.fromisoformat(m.group(0)) for line in lines if text in line and (m := stamp.match(line))]


def test_make_airflow_serves_the_bundles_dags_behind_a_login_and_ctrl_c_stops_every_process(
    launcher: tuple[Launcher, Path, int],
) -> None:
    started, home, port = launcher
    begin = time.monotonic()
    password = started.wait_for(r"^\s+password: (\S+)$", timeout=60).group(1)
    started.wait_for(rf"^ready: http://127\.0\.0\.1:{port}\b", timeout=READY_TIMEOUT)
    print(f"ready after {time.monotonic() - begin:.0f}s")
    # Kept where SimpleAuthManager reads it, for the owner only; the JWT secret too.
    password_file = home / local_airflow.PASSWORD_FILE
    assert json.loads(password_file.read_text()) == {"admin": password}
    for path in (password_file, home / local_airflow.JWT_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "Ctrl-C stops all four" in started.output

    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/api/v2/dags", timeout=30).status_code == 401  # no token, no DAGs
    wrong = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": "x"}, timeout=30)
    assert wrong.status_code == 401
    headers = {"Authorization": f"Bearer {_token(base, password)}"}
    kinds = ("training", "batch_scoring", "monitoring", "registry")
    expected = {f"{model}_{kind}" for model in load_model_configs() for kind in kinds}
    dags = _wait_for_dags(base, headers, expected)
    print(f"all {len(expected)} DAGs listed after {time.monotonic() - begin:.0f}s")
    for dag_id in sorted(expected):
        details = httpx.get(f"{base}/api/v2/dags/{dag_id}/details", headers=headers, timeout=30)
        assert details.status_code == 200, details.text
        assert (details.json()["doc_md"] or "").strip(), f"{dag_id} has no doc_md"
    assert all(dags[dag_id]["is_paused"] for dag_id in expected)  # nothing runs until someone asks

    # Ctrl-C: every process under the launcher, found now, must be gone once it has exited.
    four = psutil.Process(started.process.pid).children()
    assert len(four) == 4, [child.cmdline() for child in four]
    tree = psutil.Process(started.process.pid).children(recursive=True)  # the four and their helpers
    started.process.send_signal(signal.SIGINT)
    assert started.process.wait(timeout=2 * local_airflow.STOP_TIMEOUT + 30) == 0, started.output
    assert not _left_running(tree, home), f"left running: {_left_running(tree, home, 0)}"
    assert "stopping the scheduler, triggerer and dag-processor, then the api-server" in started.output
    assert "did not stop within" not in started.output  # each stopped on SIGTERM, none was killed
    # The api-server (the execution API) stopped last: its shutdown began after the others' last line.
    logs = home / "logs" / "local"
    others = [_stamps(logs / f"{name}.log") for name in ("scheduler", "dag-processor", "triggerer")]
    shutdown = _stamps(logs / "api-server.log", "Shutting down")
    assert shutdown and all(others), started.output
    assert max(max(stamps) for stamps in others) < min(shutdown)
    print(f"stopped after {time.monotonic() - begin:.0f}s in all")


def test_the_admin_password_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    path, first = local_airflow.admin_password(tmp_path)
    assert first and len(first) >= 20
    again_path, again = local_airflow.admin_password(tmp_path)
    assert (again_path, again) == (path, None)  # the second start says where it is, not what
    assert json.loads(path.read_text()) == {"admin": first}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = local_airflow.jwt_secret(tmp_path)
    assert local_airflow.jwt_secret(tmp_path) == secret and len(secret) >= 64
    assert stat.S_IMODE((tmp_path / local_airflow.JWT_FILE).stat().st_mode) == 0o600


def test_when_one_process_dies_the_others_are_stopped_and_the_exit_names_it(
    launcher: tuple[Launcher, Path, int],
) -> None:
    started, home, _ = launcher
    deadline = time.monotonic() + READY_TIMEOUT
    while len(four := psutil.Process(started.process.pid).children()) < 4:
        assert started.process.poll() is None and time.monotonic() < deadline, started.output
        time.sleep(0.5)
    [scheduler] = [p for p in four if "scheduler" in " ".join(p.cmdline())]
    # Its LocalExecutor forks all its workers at start (Linux): killed with the scheduler, they
    # are the helpers left in its process group that the launcher must end.
    while len(scheduler.children()) < local_airflow.PARALLELISM:
        assert scheduler.is_running() and time.monotonic() < deadline, started.output
        time.sleep(0.5)
    tree = psutil.Process(started.process.pid).children(recursive=True)
    scheduler.kill()
    assert started.process.wait(timeout=2 * local_airflow.STOP_TIMEOUT + 30) == 1, started.output
    assert "scheduler exited with code -9; stopping the others" in started.output
    assert f"--- last lines of {home / 'logs' / 'local' / 'scheduler.log'} ---" in started.output
    assert not _left_running(tree, home), f"left running: {_left_running(tree, home, 0)}"


def test_a_taken_port_and_a_second_launcher_on_the_same_home_are_refused_up_front(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tabular_mlops.local_airflow", "--home", str(tmp_path)]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run([*command, "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in done.stderr
    assert not (tmp_path / local_airflow.PASSWORD_FILE).exists()  # nothing generated for a failed start
    lock = tmp_path / local_airflow.LOCK_FILE
    with local_airflow.airflow_home_lock(tmp_path):  # as a running launcher (or the demo) holds it
        done = subprocess.run([*command, "--port", "0"], capture_output=True, text=True, timeout=60)
        assert lock.read_text() == f"{os.getpid()}\n"  # the refused one did not wipe the holder's PID
    assert done.returncode == 1, done.stderr
    assert f"{tmp_path.resolve()} is in use by process {os.getpid()}" in done.stderr


def test_the_home_lock_names_its_holder_and_is_free_again_after_the_block(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    with local_airflow.airflow_home_lock(home):  # creates the home
        with pytest.raises(local_airflow.AirflowHomeBusy) as caught:  # one more open file: refused too
            with local_airflow.airflow_home_lock(home):
                pass
        assert (caught.value.home, caught.value.pid) == (home, os.getpid())
        assert f"{home} is in use by process {os.getpid()}" in str(caught.value)
        with (home / local_airflow.LOCK_FILE).open() as other:  # as another process tries it
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with local_airflow.airflow_home_lock(home):
        pass  # released at the block's end


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.org"])  # noqa: S104 - refused, not bound
def test_a_host_beyond_loopback_is_refused_without_allow_remote(tmp_path: Path, host: str) -> None:
    home = tmp_path / "airflow"
    command = [sys.executable, "-m", "tabular_mlops.local_airflow", "--home", str(home), "--host", host]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1  # one line
    assert done.stderr.startswith(f"refusing --host {host}: not loopback") and "--allow-remote" in done.stderr
    assert not home.exists()  # refused before anything was written


def test_stop_all_ends_a_dead_leaders_helpers_and_never_signals_a_reaped_group(tmp_path: Path) -> None:
    """A dead child stays a zombie until stop_all has swept its group (so its group ID cannot be
    reused meanwhile); a child reaped before is left alone; the server stops after the others."""

    def child(name: str) -> local_airflow.Child:
        on_term = f"trap 'date +%s.%N > {tmp_path / name}; exit 0' TERM"
        process = subprocess.Popen(["/bin/sh", "-c", f"{on_term}; sleep 300 & wait"], start_new_session=True)
        return local_airflow.Child(name, process, tmp_path / "unused.log", 0)

    def helpers(*children: local_airflow.Child) -> list[psutil.Process]:
        return [h for c in children for h in psutil.Process(c.process.pid).children()]

    server, scheduler, triggerer, reaped = (
        child(n) for n in ("api-server", "scheduler", "triggerer", "dag-processor")
    )
    deadline = time.monotonic() + 10
    while len(helpers(server, scheduler, triggerer, reaped)) < 4:  # each has its `sleep`
        assert time.monotonic() < deadline
        time.sleep(0.1)
    below, orphan = helpers(server, scheduler, triggerer), helpers(reaped)
    reaped.process.kill()
    reaped.process.wait()  # reaped: its group ID may be someone else's now, so it is not signalled
    scheduler.process.kill()  # dead, not reaped: its `sleep` is left in its group
    while local_airflow.exit_code(scheduler) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert scheduler.process.returncode is None  # seen dead, still a zombie holding its PID
    local_airflow.stop_all([server, scheduler, triggerer, reaped], timeout=10)
    assert [c.process.returncode for c in (server, scheduler, triggerer)] == [0, -9, 0]
    assert float((tmp_path / "triggerer").read_text()) < float((tmp_path / "api-server").read_text())
    assert not [h for h in below if _running(h)]
    assert all(_running(h) for h in orphan)
    local_airflow.kill_processes(orphan, timeout=30)
