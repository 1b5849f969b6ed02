"""The compose topology without containers: every service a real process on a loopback port.

PostgreSQL and Redis are the machine's own (fresh databases per run, a private Celery queue);
moto's S3 server stands in for MinIO, aiosmtpd for mailpit. Airflow runs its api-server,
scheduler, dag-processor, triggerer and a Celery worker under the FAB auth manager; MLflow a tracking server
with a Postgres backend, artifacts proxied to S3 and its basic-auth app (users in Postgres too),
whose workers' and serving users `mlops registry-access` creates. Every process is started here
and stopped by `Stack.stop`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import free_port, wait_until_ok

PROJECT_DIR = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_DSN = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS = ("127.0.0.1", 6379)
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def unreachable_services() -> list[str]:
    """The machine services the stack needs that do not answer (empty when all do)."""
    missing = []
    try:
        import psycopg2

        psycopg2.connect(dbname="postgres", connect_timeout=3, **PG_DSN).close()
    except Exception as exc:  # any failure means: not usable here
        missing.append(f"PostgreSQL at 127.0.0.1:5432 ({str(exc).strip().splitlines()[0]})")
    try:
        with socket.create_connection(REDIS, timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                missing.append("Redis at 127.0.0.1:6379 (no PONG)")
    except OSError as exc:
        missing.append(f"Redis at 127.0.0.1:6379 ({exc})")
    if shutil.which("redis-server") is None:  # the online store runs one of its own
        missing.append("redis-server on PATH (the online store)")
    return missing


def _admin(sql: str) -> None:
    import psycopg2

    con = psycopg2.connect(dbname="postgres", **PG_DSN)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(sql)
    finally:
        con.close()


@dataclass
class Stack:
    """Ports, folders and processes of one native stack."""

    root: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    mlflow_store: str = ""
    mlflow_auth_store: str = ""
    # MLflow's basic-auth users, (username, password) by role: admin, workers, serving.
    mlflow_users: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            role: (name, secrets.token_hex(12))
            for role, name in (("admin", "admin"), ("workers", "airflow-workers"), ("serving", "serving"))
        }
    )
    signing_key: str = field(default_factory=lambda: secrets.token_hex(32))
    online_password: str = field(default_factory=lambda: secrets.token_hex(16))
    # The registry webhook's HMAC secret, and the key MLflow encrypts it with (kept across restarts).
    webhook_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    webhook_key: str = field(
        default_factory=lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    )

    @property
    def queue(self) -> str:
        """The private Celery queue: the machine's Redis may be shared, this run's tasks are not."""
        return f"stack-{self.suffix}"

    def url(self, service: str) -> str:
        """http://127.0.0.1:<port> of a service."""
        return f"http://127.0.0.1:{self.ports[service]}"

    def database(self, purpose: str) -> str:
        """Create a fresh database; return its SQLAlchemy URL."""
        name = f"stack_{purpose}_{self.suffix}"
        _admin(f"CREATE DATABASE {name}")  # name: fixed prefix + hex
        self.databases.append(name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start a process of the stack, its output in <root>/logs/<name>.log."""
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = (logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_DIR, start_new_session=True
        )
        self.processes[name] = process
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a process and everything it started (its session)."""
        import psutil

        process = self.processes.pop(name)
        try:  # the whole tree: Celery's pool and task processes may sit in other groups
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for member in reversed(tree):
            try:
                member.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for member in tree:
                try:
                    member.kill()
                except psutil.NoSuchProcess:
                    pass
            process.wait(timeout=10)

    def log(self, name: str, tail: int = 4000) -> str:
        """The end of a process's log, for failure messages."""
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else "(no log)"

    def stop(self) -> None:
        """Stop every process (TERM, then KILL) and drop the databases."""
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)
        for name in self.databases:
            try:
                _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except Exception:  # noqa: S110 - best effort: the server may be gone
                pass

    # --- the services -------------------------------------------------------------------

    def start_online_store(self) -> str:
        """A Redis of its own with a password (as compose's online-store), on a free port."""
        import redis

        self.ports["online_store"] = free_port()
        conf = self.root / "online-store.conf"
        conf.write_text(
            f"port {self.ports['online_store']}\nbind 127.0.0.1\nrequirepass {self.online_password}\n"
            f'save ""\nappendonly no\nmaxmemory-policy noeviction\ndir {self.root}\n'
        )
        conf.chmod(0o600)
        self.start("online-store", [shutil.which("redis-server") or "redis-server", str(conf)], self.env())
        deadline = time.monotonic() + 30
        while True:
            try:
                redis.Redis.from_url(self.online_store_url).ping()
                return self.online_store_url
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @property
    def online_store_url(self) -> str:
        """MLOPS_ONLINE_STORE_URL of the workers and serving."""
        return f"redis://:{self.online_password}@127.0.0.1:{self.ports['online_store']}/0"

    def start_s3(self) -> str:
        """moto's S3 server (MinIO's stand-in) with the buckets of the compose file."""
        import boto3

        self.ports["s3"] = free_port()
        command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["s3"])]
        self.start("s3", command, self.env())
        wait_until_ok(f"{self.url('s3')}/moto-api/", self.processes["s3"], timeout=60)
        s3 = boto3.client("s3", endpoint_url=self.url("s3"), **self.aws_keys())
        for bucket in ("mlflow", "lake"):
            s3.create_bucket(Bucket=bucket)
        return self.url("s3")

    def aws_keys(self) -> dict[str, str]:
        """Credentials the moto server accepts."""
        return {"aws_access_key_id": "stack", "aws_secret_access_key": "stack", "region_name": "us-east-1"}

    def aws_connection(self) -> str:
        """AIRFLOW_CONN_AWS_DEFAULT on the moto server (the workers' and serving's lake access)."""
        aws = {"endpoint_url": self.url("s3"), "region_name": "us-east-1"}
        return json.dumps({"conn_type": "aws", "login": "stack", "password": "stack", "extra": aws})

    def start_mlflow(self) -> str:
        """An MLflow tracking server with basic auth: Postgres stores, artifacts proxied to S3.

        Started through docker/mlflow/entrypoint.sh, as in compose: it writes the auth app's ini
        (auth database, NO_PERMISSIONS by default) from the environment.
        """
        if not self.mlflow_store:  # a restart keeps the stores and the secret key
            self.mlflow_store = self.database("mlflow")
            self.mlflow_auth_store = self.database("mlflow_auth")
            self.mlflow_secret = secrets.token_urlsafe(32)
        self.ports.setdefault("mlflow", free_port())
        admin, admin_password = self.mlflow_users["admin"]
        env = {
            **self.env(),
            "MLFLOW_S3_ENDPOINT_URL": self.url("s3"),
            "AWS_ACCESS_KEY_ID": "stack",
            "AWS_SECRET_ACCESS_KEY": "stack",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_AUTH_DATABASE_URI": self.mlflow_auth_store,
            "MLFLOW_AUTH_CONFIG_PATH": str(self.root / "mlflow_basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_USERNAME": admin,
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.mlflow_secret,
            "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "true",
            "MLFLOW_AUTH_CACHE_TTL_SECONDS": "30",  # as in compose
            # Webhooks to serving on 127.0.0.1 over plain HTTP, as compose allows for its private network.
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": self.webhook_key,
            "MLFLOW_WEBHOOK_CACHE_TTL": "10",
        }
        entrypoint = PROJECT_DIR / "docker" / "mlflow" / "entrypoint.sh"
        command = ["/bin/sh", str(entrypoint), "--app-name", "basic-auth"]
        command += ["--backend-store-uri", self.mlflow_store]
        command += ["--artifacts-destination", "s3://mlflow/", "--host", "127.0.0.1"]
        command += ["--port", str(self.ports["mlflow"]), "--workers", "1"]
        process = self.start("mlflow", command, env)
        wait_until_ok(f"{self.url('mlflow')}/health", process, timeout=180)
        return self.url("mlflow")

    def grant_registry_access(self, config_dir: Path) -> dict[str, Any]:
        """`mlops registry-access`, then `mlops webhook`, as the MLflow admin (compose's one-shot job);
        return the access summary (the webhook's is kept as `self.webhook`)."""
        admin, workers, serving = (self.mlflow_users[role] for role in ("admin", "workers", "serving"))
        env = {
            **self.env(),
            "MLFLOW_TRACKING_URI": self.url("mlflow"),
            "MLFLOW_TRACKING_USERNAME": admin[0],
            "MLFLOW_TRACKING_PASSWORD": admin[1],
            "MLFLOW_WORKERS_USERNAME": workers[0],
            "MLFLOW_WORKERS_PASSWORD": workers[1],
            "MLFLOW_SERVING_USERNAME": serving[0],
            "MLFLOW_SERVING_PASSWORD": serving[1],
            "MLOPS_CONFIG_DIR": str(config_dir),
        }
        result = subprocess.run(
            [str(BIN / "mlops"), "registry-access"], env=env, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"mlops registry-access failed: {result.stderr[-3000:]}")
        self.ports.setdefault("serving", free_port())  # the webhook names serving's port before it starts
        url = f"{self.url('serving')}/internal/registry-events"
        hook = subprocess.run(
            [str(BIN / "mlops"), "webhook", "--url", url],
            env={**env, "MLOPS_WEBHOOK_SECRET": self.webhook_secret},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if hook.returncode != 0:
            raise RuntimeError(f"mlops webhook failed: {hook.stderr[-3000:]}")
        self.webhook = dict(json.loads(hook.stdout.strip().splitlines()[-1]))
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def mlflow_credentials(self, role: str) -> dict[str, str]:
        """MLflow's client variables of one basic-auth user."""
        username, password = self.mlflow_users[role]
        return {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}

    def env(self) -> dict[str, str]:
        """The environment every process of the stack shares (the compose file's x-airflow-common)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "AWS_"))}
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**base, "PATH": path, "PYTHONPATH": str(PROJECT_DIR)}

    def airflow_env(self) -> dict[str, str]:
        """Airflow's configuration for this stack."""
        home = self.root / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        sql = self.airflow_db
        smtp = {"disable_tls": True, "disable_ssl": True, "from_email": "mlops@example.com", "timeout": 10}
        return {
            **self.env(),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url('airflow')}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__API__BASE_URL": self.url("airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql,
            "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{sql}",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            # Fast enough for a test: re-parse often, notice a dead worker's task within seconds.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports["worker_logs"]),
            "AIRFLOW_CONN_AWS_DEFAULT": self.aws_connection(),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                {"conn_type": "smtp", "host": "127.0.0.1", "port": self.ports["smtp"], "extra": smtp}
            ),
            "MLFLOW_TRACKING_URI": self.url("mlflow"),
            **self.mlflow_credentials("workers"),
            "MLOPS_MODEL_SIGNING_KEY": self.signing_key,
            "MLOPS_LAKE": "s3://lake",
            "MLOPS_DATA_DIR": str(self.root / "data"),
            "MLOPS_REPORTS_DIR": str(self.root / "reports"),
            "MLOPS_CONFIG_DIR": str(self.config_dir),
            "MLOPS_ONLINE_STORE_URL": self.online_store_url,
            "GX_ANALYTICS_ENABLED": "false",
        }

    def start_airflow(self, config_dir: Path) -> str:
        """A fresh metadata DB with the FAB admin; then api-server, scheduler, dag-processor,
        triggerer and a worker."""
        from cryptography.fernet import Fernet

        self.config_dir = config_dir
        self.fernet_key = Fernet.generate_key().decode()
        self.jwt_secret = secrets.token_urlsafe(32)
        self.airflow_db = self.database("airflow")
        self.ports.update(airflow=free_port(), worker_logs=free_port())
        env = self.airflow_env()
        admin = ["users", "create", "--role", "Admin", "--username", "admin", "--email", "admin@example.com"]
        admin += ["--firstname", "Stack", "--lastname", "Admin", "--password", self.password]
        for step in (["db", "migrate"], ["fab-db", "migrate"], admin):  # airflow-init's steps
            done = subprocess.run(
                [str(BIN / "airflow"), *step], env=env, capture_output=True, text=True, timeout=600
            )
            if done.returncode != 0:
                raise RuntimeError(f"airflow {' '.join(step[:2])} failed: {done.stderr[-3000:]}")
        api = [str(BIN / "airflow"), "api-server", "-H", "127.0.0.1", "-p", str(self.ports["airflow"])]
        self.start("api-server", api, env)
        self.start("scheduler", [str(BIN / "airflow"), "scheduler"], env)
        self.start("dag-processor", [str(BIN / "airflow"), "dag-processor"], env)
        self.start("triggerer", [str(BIN / "airflow"), "triggerer"], env)  # deferred tasks wait here
        self.start_worker()
        wait_until_ok(
            f"{self.url('airflow')}/api/v2/monitor/health", self.processes["api-server"], timeout=240
        )
        return self.url("airflow")

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        """A Celery worker on this stack's queue."""
        command = [str(BIN / "airflow"), "celery", "worker", "-q", self.queue, "-c", "2"]
        command += ["-H", f"{name}-{self.suffix}@%h", "--without-gossip", "--without-mingle"]
        return self.start(name, command, self.airflow_env())

    def start_serving(self, api_key: str) -> str:
        """The scoring service under gunicorn, pointed at the MLflow server, on the webhook's port."""
        self.ports.setdefault("serving", free_port())
        env = {
            **self.env(),
            "MLFLOW_TRACKING_URI": self.url("mlflow"),
            **self.mlflow_credentials("serving"),
            "MLOPS_MODEL_SIGNING_KEY": self.signing_key,
            "MLOPS_CONFIG_DIR": str(self.config_dir),
            "PORT": str(self.ports["serving"]),
            "HOST": "127.0.0.1",
            "SERVING_WORKERS": "1",
            "SERVING_API_KEY": api_key,
            # The shipped default: a promotion reaches serving by the webhook, polling is the fallback.
            "SERVING_RELOAD_SECONDS": "30",
            "MLOPS_WEBHOOK_SECRET": self.webhook_secret,
            "SERVING_EVENTS_DIR": str(self.root / "serving-events"),
            # Shadow rows go to the stack's lake through the same S3 connection the workers use.
            "MLOPS_LAKE": "s3://lake",
            "AIRFLOW_CONN_AWS_DEFAULT": self.aws_connection(),
            "AIRFLOW_HOME": str(self.root / "serving-airflow"),  # the S3 hook's Airflow, not ~/airflow
            "SERVING_SHADOW_FLUSH_SECONDS": "2",
            "MLOPS_ONLINE_STORE_URL": self.online_store_url,
        }
        command = [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:app"]
        process = self.start("serving", command, env)
        wait_until_ok(f"{self.url('serving')}/ready", process, timeout=180)
        return self.url("serving")


@dataclass
class AirflowClient:
    """Airflow's public REST API, logged in the way the UI is (a JWT from FAB's /auth/token)."""

    base: str
    password: str
    token: str = ""

    def _headers(self) -> dict[str, str]:
        if not self.token:
            response = httpx.post(
                f"{self.base}/auth/token", json={"username": "admin", "password": self.password}, timeout=30
            )
            response.raise_for_status()
            self.token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self.token}"}

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call under /api/v2."""
        url = f"{self.base}/api/v2{path}"
        return httpx.request(method, url, headers=self._headers(), timeout=60, **kwargs)

    def wait_for_dag(self, dag_id: str, timeout: float = 240) -> None:
        """Until the dag-processor has parsed the DAG."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call("GET", f"/dags/{dag_id}").status_code == 200:
                return
            time.sleep(2)
        raise TimeoutError(f"{dag_id} was not parsed within {timeout:.0f}s")

    def unpause(self, dag_id: str) -> None:
        """Switch the DAG on (the UI's toggle)."""
        self.wait_for_dag(dag_id)
        response = self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        response.raise_for_status()

    def trigger(self, dag_id: str, conf: dict[str, Any], logical_date: str | None = None) -> str:
        """Trigger a run as the UI's Trigger button does; return its run id."""
        self.unpause(dag_id)
        body = {"logical_date": logical_date, "conf": conf}
        response = self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's runs, newest first."""
        response = self.call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})
        response.raise_for_status()
        return list(response.json()["dag_runs"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        """Until the run ends; return it (state success or failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
            if run.get("state") in ("success", "failed"):
                return dict(run)
            time.sleep(3)
        raise TimeoutError(f"{dag_id} {run_id} did not finish within {timeout:.0f}s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, tuple[str, int]]:
        """task id (with map index) -> (state, try number) of a run."""
        response = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        return {
            f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: (
                t["state"],
                t["try_number"],
            )
            for t in response.json()["task_instances"]
        }
