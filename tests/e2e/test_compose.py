"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine): check that
they say what the tests exercise, with settings unsubd itself accepts."""

from __future__ import annotations

import re

import yaml

import config
from worker.app import parse_roles
from tests.conftest import REPO


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_services_with_health_checks():
    services = compose()["services"]
    assert {"postgres", "rabbitmq", "listener", "consumer"} <= set(services)
    assert "management" in services["rabbitmq"]["image"]
    for name in ("postgres", "rabbitmq"):
        assert services[name]["healthcheck"]["test"]
    for name in ("listener", "consumer"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert compose()["volumes"].keys() >= {"pgdata", "rabbitdata"}


def roles_of(service: dict) -> tuple[str, ...]:
    command = service["command"]
    assert command[:2] == ["unsubd", "serve"]
    return parse_roles(command[command.index("--role") + 1])


def test_the_unsubd_environment_is_valid_for_config_load():
    services = compose()["services"]
    for name in ("listener", "consumer"):
        assert services[name]["environment"] == services["migrate"]["environment"]
    env = {k: str(v) for k, v in services["migrate"]["environment"].items()}
    env["UNSUBD_CONFIG"] = str(REPO / env["UNSUBD_CONFIG"].removeprefix("/app/"))
    settings = config.load(env)
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.amqp_url and settings.amqp_url.startswith("amqp://")
    assert settings.http_host == "0.0.0.0" and settings.api_keys     # public HTTP needs keys: load() checks it


def test_listeners_and_consumers_are_apart_as_the_tests_run_them():
    """The relay with the listener; the consumer on its own, at a lower CPU weight, with
    HTTP for its health check. tests/e2e/test_amqp.py runs these roles apart (`apart`)."""
    services = compose()["services"]
    assert roles_of(services["listener"]) == ("smtp", "http", "relay")
    assert roles_of(services["consumer"]) == ("consumer", "http")
    assert "ports" not in services["consumer"]                 # so it scales: --scale consumer=N
    assert any(p.endswith(":2525") for p in services["listener"]["ports"])
    assert 2 <= services["consumer"]["cpu_shares"] < 1024


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert "HEALTHCHECK" in text and "/readyz" in text
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (REPO / copied).exists(), copied
