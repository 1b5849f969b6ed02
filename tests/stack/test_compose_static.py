"""docker-compose.yaml and the Dockerfile, checked without a Docker engine (these machines have none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
ONE_SHOT = {"airflow-init"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_DIR / "docker-compose.yaml").read_text())


def test_services_of_the_celery_stack_are_present(compose: dict) -> None:
    assert {"postgres", "redis"} | AIRFLOW_SERVICES <= set(compose["services"])
    for name in AIRFLOW_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:"), name


def test_every_long_running_service_has_a_health_check(compose: dict) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck", {}).get("test")
        assert check, f"{name} has no healthcheck"


def test_airflow_waits_for_healthy_dependencies(compose: dict) -> None:
    for name in AIRFLOW_SERVICES:
        needs = compose["services"][name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy", name
        assert needs["redis"]["condition"] == "service_healthy", name
        if name not in ONE_SHOT:
            assert needs["airflow-init"]["condition"] == "service_completed_successfully", name


def test_images_are_built_here_or_pinned_by_tag(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            assert (PROJECT_DIR / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), (
                name
            )
            continue
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image!r} is not pinned"


def test_every_variable_is_documented_and_secrets_are_required() -> None:
    text = (PROJECT_DIR / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = (PROJECT_DIR / ".env.example").read_text()
    documented = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", example, flags=re.M))
    assert used <= set(documented), f"undocumented: {sorted(used - set(documented))}"
    for secret in ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"):
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret} must be required, not defaulted"
        assert documented[secret] == "", f".env.example must not carry a value for {secret}"


def test_dockerfile_installs_the_lock_and_runs_as_non_root() -> None:
    text = (PROJECT_DIR / "Dockerfile").read_text()
    assert "requirements.txt" in text and "_PIP_ADDITIONAL_REQUIREMENTS" not in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
