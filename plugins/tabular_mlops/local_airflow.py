"""`make airflow`: the bundle's Airflow on the demo's metadata DB, as four local processes.

Starts `airflow api-server`, `scheduler`, `dag-processor` and `triggerer` on the SQLite metadata DB
that `make demo` fills (`.airflow/` in the project; AIRFLOW_HOME or --home elsewhere), so the UI
shows the DAGs, their docs and the demo's runs, and a run can be triggered from the form. The
triggerer runs the deferred waits (batch scoring's partition marker); the training DAG's approval
waits in Required Actions (Airflow 3.3 parks it as `awaiting_input`, no trigger involved).

Auth is Airflow's simple auth manager with one user, `admin`. Its password is generated on the
first start, printed once, and kept where the manager reads it
(`<home>/simple_auth_manager_passwords.json.generated`, mode 0600). The JWT secret every process
shares is kept beside it (`<home>/jwt_secret`, 0600).

Output of the children goes to `<home>/logs/local/<process>.log`. Ctrl-C (SIGINT, SIGTERM, SIGHUP)
stops all four: the scheduler, triggerer and dag-processor first, then the api-server, which also
serves the execution API that running tasks report their state to. When one dies the others are
stopped and the exit is non-zero with its log's tail.

One launcher per home: it holds `<home>/local_airflow.lock` (`airflow_home_lock`, which the demo
takes too, so two writers never share the SQLite metadata DB). It binds loopback only unless
`--allow-remote` is given: the login is plain HTTP and the port serves the execution API.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabular_mlops import settings

BIN = Path(sys.executable).parent  # not resolved: the venv's python is a symlink to the base one
ADMIN = "admin"
# The manager's own default file name (a name, not a password).
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"  # noqa: S105 - a file name, not a password
JWT_FILE = "jwt_secret"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVER = "api-server"  # stopped last: it also serves the execution API the tasks report to
LOCK_FILE = "local_airflow.lock"
PARALLELISM = 4  # the LocalExecutor's workers (the scheduler forks them all at its start on Linux)
READY_TIMEOUT = 300.0  # the api-server imports all of Airflow's routes: tens of seconds on 2 CPUs
STOP_TIMEOUT = 30.0  # per stage: the scheduler's LocalExecutor waits for running tasks before it exits


def default_home() -> Path:
    """AIRFLOW_HOME when set, else `<project>/.airflow`: the same rule as `make demo`."""
    return Path(os.environ.get("AIRFLOW_HOME") or settings.project_dir() / ".airflow")


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (created 0600, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        handle.write(text)


def admin_password(home: Path) -> tuple[Path, str | None]:
    """The password file, and admin's password when generated now (None when already kept there).

    SimpleAuthManager.init() generates missing users' passwords itself, but prints them into the
    api-server's log; writing the entry first lets it find admin and keeps the password on screen.
    """
    path = home / PASSWORD_FILE
    passwords: dict[str, str] = {}
    if path.exists():
        try:
            passwords = json.loads(path.read_text().strip() or "{}")
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path} is not JSON ({exc}); delete it to get a new admin password") from exc
    if passwords.get(ADMIN):
        path.chmod(0o600)
        return path, None
    passwords[ADMIN] = secrets.token_urlsafe(16)
    _write_private(path, json.dumps(passwords) + "\n")
    return path, passwords[ADMIN]


def jwt_secret(home: Path) -> str:
    """The JWT secret shared by all four processes, kept in `<home>/jwt_secret` (0600).

    The api-server signs the UI's tokens and the tasks' execution-API tokens with it and every
    process checks them; kept across starts so a browser's login survives a restart.
    """
    path = home / JWT_FILE
    if path.exists() and (kept := path.read_text().strip()):
        path.chmod(0o600)
        return kept
    secret = secrets.token_urlsafe(64)  # 86 characters: PyJWT warns below 64 bytes for HS512
    _write_private(path, secret + "\n")
    return secret


def url_host(host: str) -> str:
    """The host to put in URLs: loopback for a wildcard bind, brackets around IPv6."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def project_airflow_settings() -> dict[str, str]:
    """The Airflow settings `make demo` and `make airflow` share: the bundle's DAGs, no examples."""
    return {
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project_dir() / "dags"),
    }


def airflow_env(home: Path, host: str, port: int, secret: str) -> dict[str, str]:
    """The environment of the four processes: the demo's Airflow settings plus auth and the API."""
    base = f"http://{url_host(host)}:{port}"
    env = dict(os.environ)
    for name, value in project_airflow_settings().items():
        env.setdefault(name, value)
    # Few concurrent tasks: SQLite takes one writer at a time and a laptop has a few cores.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(PARALLELISM))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            # Airflow 3 has no SequentialExecutor any more; LocalExecutor is its default and runs on
            # SQLite (it is what `airflow standalone` uses). Celery would need a broker and Postgres.
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",  # user:role, one Admin
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / PASSWORD_FILE),
            # The env var, not airflow.cfg: the demo's cfg holds a secret of its own per first start.
            "AIRFLOW__API_AUTH__JWT_SECRET": secret,
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base,
            # Tasks report to the execution API on this port (the default assumes 8080).
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            # make does not activate the venv; tasks and hooks that run `airflow` or `mlops` find it.
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def _check_port(host: str, port: int) -> None:
    """Exit with advice when the port is taken, rather than with the api-server's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        advice = f"cannot listen on {host}:{port} ({reason}): try `make airflow PORT={port + 1}`"
        raise SystemExit(advice) from None


class AirflowHomeBusy(RuntimeError):
    """Another process holds the home's lock: `make airflow` or `make demo` already runs on it.

    `home` is the Airflow home, `pid` the holder's PID as it wrote it (None when not written yet).
    """

    def __init__(self, home: Path, pid: int | None) -> None:
        self.home, self.pid = home, pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"{home} is in use by {holder} (`make airflow` or `make demo` on the same metadata DB); "
            "stop it first"
        )


@contextmanager
def airflow_home_lock(home: Path) -> Iterator[None]:
    """Hold `<home>/local_airflow.lock` inside the block: one writer of the home's SQLite metadata DB.

    A non-blocking flock (released when the block ends or the process dies, even by SIGKILL); the
    holder's PID is written into the file. Creates `home` if needed. Raises AirflowHomeBusy, naming
    the home and the holder's PID, when another process holds it. `make airflow` holds it for its
    whole run and `make demo` while it runs Airflow, so the two never write one DB at once.
    """
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    # "a+", not "w": opening must not truncate the holder's PID before our flock has succeeded.
    with (home / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise AirflowHomeBusy(home, int(holder) if holder.isdigit() else None) from None
        handle.truncate(0)  # ours now: the previous holder's PID goes
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)  # while still held: the file never names a process that let go


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a child-side hook asking for SIGTERM when the launcher dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

    return hook


@dataclass
class Child:
    """One Airflow process: its name, Popen and the part of its log this start wrote."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    offset: int

    def tail(self, lines: int = 30) -> str:
        """The last lines this start wrote to the log."""
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Child:
    """Start `airflow <argv>` in a session of its own, its output appended to `<logs>/<name>.log`.

    Its own session: Ctrl-C reaches only the launcher, which then stops the four in order, and a
    group signal reaches the process's helpers (LocalExecutor workers, uvicorn, parsers) too.
    """
    log = logs / f"{name}.log"
    with log.open("ab") as handle:
        handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} airflow {' '.join(argv)}\n".encode())
        offset = handle.tell()
        process = subprocess.Popen(  # noqa: S603 - the venv's airflow with a fixed argv
            [str(BIN / "airflow"), *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=settings.project_dir(),
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # safe: the launcher runs no threads
        )
    return Child(name, process, log, offset)


def _migrate(env: dict[str, str], logs: Path) -> None:
    """`airflow db migrate`: creates the DB on a first start, a no-op check when already current.

    In a session of its own so an early Ctrl-C does not cut a schema change in half.
    """
    log = logs / "migrate.log"
    with log.open("w") as handle:
        done = subprocess.run(  # noqa: S603 - the venv's airflow with a fixed argv
            [str(BIN / "airflow"), "db", "migrate"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"airflow db migrate failed (full log: {log}):\n{tail}")


class Signals:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) become a flag that the loops poll.

    A flag rather than an exception: a signal landing between a Popen and its bookkeeping can then
    never leave a process nobody stops.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum


def _answers(url: str) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - http URL we built
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def exit_code(child: Child) -> int | None:
    """The child's exit code once it has exited (Popen's convention: -N for signal N), else None.

    With os.waitid (Linux; macOS from Python 3.13) it looks without reaping: a dead leader stays a
    zombie, which keeps its PID, and so its process-group ID, from being reused until stop_all has
    signalled the group's helpers and reaped it. Elsewhere it reaps (Popen.poll), and stop_all then
    leaves that group alone.
    """
    process = child.process
    if process.returncode is not None or not hasattr(os, "waitid"):
        return process.poll()
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already (Popen's own bookkeeping)
        return process.poll()
    if info is None:
        return None
    return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status


def _wait(
    children: list[Child], signals: Signals, until: Callable[[], bool] | None = None, timeout: float = 0
) -> Child | None:
    """Poll until `until()` holds (when given), a signal comes, or a child dies; return the dead one.

    Raises TimeoutError when `until` does not hold within `timeout` seconds.
    """
    deadline, last_try = time.monotonic() + timeout, 0.0
    while signals.received is None:
        for child in children:
            if exit_code(child) is not None:
                return child
        if until is not None and time.monotonic() - last_try >= 1:
            last_try = time.monotonic()
            if until():
                return None
            if last_try > deadline:
                raise TimeoutError
        time.sleep(0.2)
    return None


def _tree(children: list[Child]) -> list[Any]:
    """Every live process below the children (psutil), found before they exit and re-parent."""
    import psutil

    found = []
    for child in children:
        if child.process.returncode is not None:  # reaped: its PID may be someone else's now
            continue
        try:
            found += psutil.Process(child.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    return found


def _signal_group(child: Child, sig: int) -> None:
    """Send `sig` to the child's process group (its session: itself and its helpers).

    Only while the leader is unreaped (running, or a zombie that exit_code left): a reaped leader's
    group ID may have been reused by an unrelated process group.
    """
    if child.process.returncode is not None:
        return
    try:
        os.killpg(child.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exited_within(child: Child, seconds: float) -> bool:
    """Wait up to `seconds` for the child to exit (without reaping it where exit_code can)."""
    deadline = time.monotonic() + seconds
    while exit_code(child) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _stop_stage(children: list[Child], timeout: float) -> None:
    """SIGTERM the children's groups, wait up to `timeout`, SIGKILL a group whose leader is still
    there; then SIGKILL the helpers left in each group and reap the leader."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        if not _exited_within(child, max(0.0, deadline - time.monotonic())):
            _say(f"  {child.name} did not stop within {timeout:.0f}s: killed")
            _signal_group(child, signal.SIGKILL)
            if not _exited_within(child, 10):
                _say(f"  {child.name} (pid {child.process.pid}) still runs 10s after SIGKILL", err=True)
                continue
        _signal_group(child, signal.SIGKILL)  # helpers left in the group; the zombie leader holds its ID
        child.process.poll()  # reap it


def stop_all(children: list[Child], timeout: float = STOP_TIMEOUT) -> None:
    """Stop the scheduler, triggerer and dag-processor and wait for them; then the api-server.

    The api-server also serves the execution API: a task still running while the scheduler's
    LocalExecutor shuts down reports its state through it, so it stops last. Each of the two
    stages SIGTERMs the process groups, waits up to `timeout` seconds, SIGKILLs a group whose
    leader is still there, then the helpers left in each group. A child already reaped is not
    signalled (its group ID may be reused). Last, what is left of the process trees found before
    the first signal is killed. Call it once: it reaps every child it stops.
    """
    import psutil

    below = _tree(children)
    _stop_stage([child for child in children if child.name != SERVER], timeout)
    _stop_stage([child for child in children if child.name == SERVER], timeout)
    # Task processes sit in groups of their own (the task supervisor's setpgid); their supervisor
    # ends them, and this ends what it could not.
    _, alive = psutil.wait_procs(below, timeout=5)
    kill_processes(alive, timeout=5)


def kill_processes(processes: list[Any], timeout: float) -> None:
    """SIGKILL each psutil process that is still there and wait up to `timeout` for them to go."""
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=timeout)


def _commands(host: str, port: int) -> dict[str, list[str]]:
    """argv of each process after `airflow`.

    No log servers: they bind every interface (no host option) on fixed ports 8793/8794, and here
    the api-server reads task and trigger logs from the same disk anyway.
    """
    return {
        "api-server": ["api-server", "--host", host, "--port", str(port)],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }


def _banner(home: Path, host: str, password_file: Path, password: str | None) -> None:
    """What the newcomer needs: where, who, the password once, and where the logs go."""
    from importlib.metadata import version

    # Not `import airflow`: that would read (and on a first import write) an airflow.cfg in the
    # launcher's own environment, before AIRFLOW_HOME points at `home`.
    _say(f"Airflow {version('apache-airflow')}, home {home}")
    _say(f"  user:     {ADMIN}")
    if password is not None:
        _say(f"  password: {password}")
        _say(f"            shown this once; kept in {password_file} (mode 0600)")
    else:
        _say(f"  password: kept in {password_file} (mode 0600), not shown again")
    _say(f"  logs:     {home / 'logs' / 'local'}/{{{','.join(PROCESSES)}}}.log")
    if not is_loopback(host):  # only with --allow-remote
        _say(f"  WARNING: bound to {host}: other machines reach this dev-only login and the execution API")
    _say("  migrating the metadata DB, then starting api-server, scheduler, dag-processor, triggerer ...")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    summary = (__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m tabular_mlops.local_airflow", description=summary)
    parser.add_argument("--port", type=int, default=8080, help="the UI and API port (8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    remote_help = "allow a --host beyond loopback (plain-HTTP login, the execution API exposed)"
    parser.add_argument("--allow-remote", action="store_true", help=remote_help)
    home_help = "AIRFLOW_HOME to use (default: $AIRFLOW_HOME, else <project>/.airflow, as make demo)"
    parser.add_argument("--home", type=Path, default=None, help=home_help)
    return parser.parse_args(argv)


def _say(text: str, err: bool = False) -> None:
    """Print and flush; a terminal that is gone (SIGHUP) must not stop the shutdown."""
    try:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
    except OSError:
        pass


def _run(
    args: argparse.Namespace, env: dict[str, str], signals: Signals, children: list[Child]
) -> Child | None:
    """Start the four into `children`, say ready, then wait for Ctrl-C (None) or a death (the dead one)."""
    home, url = Path(env["AIRFLOW_HOME"]), env["AIRFLOW__API__BASE_URL"]
    _migrate(env, home / "logs" / "local")
    for name, command in _commands(args.host, args.port).items():
        if signals.received is None:
            children.append(_start(name, command, env, home / "logs" / "local"))
    health = f"{url}/api/v2/monitor/health"
    try:
        dead = _wait(children, signals, until=lambda: _answers(health), timeout=READY_TIMEOUT)
    except TimeoutError:
        dead = children[0]  # the api-server, alive but silent
        _say(f"\nthe api-server did not answer {health} within {READY_TIMEOUT:.0f}s", err=True)
    if dead is None and signals.received is None:
        _say(f"ready: {url}  (log in as {ADMIN})")
        _say("  the DAGs appear once the dag-processor has parsed dags/; a new DAG starts paused and")
        _say("  the trigger form's 'Unpause ... on trigger' switches it on. Ctrl-C stops all four.")
        dead = _wait(children, signals)
    if dead is None:
        _say("\nstopping the scheduler, triggerer and dag-processor, then the api-server ...")
        return None
    code = exit_code(dead)
    what = f"exited with code {code}" if code is not None else "does not answer"
    _say(f"\n{dead.name} {what}; stopping the others", err=True)
    return dead


def main(argv: list[str] | None = None) -> int:
    """Prepare the home, start the four processes, and stop them all on the way out, whatever happens."""
    args = _parse(argv)
    if not (args.allow_remote or is_loopback(args.host)):
        _say(
            f"refusing --host {args.host}: not loopback, and the login is plain HTTP and the port "
            "serves the execution API; add --allow-remote to bind it anyway",
            err=True,
        )
        return 2
    home = (args.home or default_home()).resolve()
    try:
        with airflow_home_lock(home):
            return _serve(args, home)
    except AirflowHomeBusy as exc:
        raise SystemExit(str(exc)) from None


def _serve(args: argparse.Namespace, home: Path) -> int:
    """Under the home's lock: start the four, and stop them all once on the way out, whatever happens."""
    (home / "logs" / "local").mkdir(parents=True, exist_ok=True)
    _check_port(args.host, args.port)
    password_file, password = admin_password(home)
    env = airflow_env(home, args.host, args.port, jwt_secret(home))
    signals = Signals()
    _banner(home, args.host, password_file, password)
    children: list[Child] = []
    dead = None
    try:
        dead = _run(args, env, signals, children)
    finally:
        stop_all(children)  # the one call: it reaps what it stops
    if dead is None:
        return 0
    _say(f"--- last lines of {dead.log} ---\n{dead.tail()}", err=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
