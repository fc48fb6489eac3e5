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


def test_compose_has_the_three_services_with_health_checks():
    services = compose()["services"]
    assert {"postgres", "rabbitmq", "unsubd"} <= set(services)
    assert "management" in services["rabbitmq"]["image"]
    for name in ("postgres", "rabbitmq"):
        assert services[name]["healthcheck"]["test"]
    assert services["unsubd"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert compose()["volumes"].keys() >= {"pgdata", "rabbitdata"}


def test_the_unsubd_environment_is_valid_for_config_load():
    services = compose()["services"]
    env = {k: str(v) for k, v in services["unsubd"]["environment"].items()}
    assert services["migrate"]["environment"] == services["unsubd"]["environment"]
    env["UNSUBD_CONFIG"] = str(REPO / env["UNSUBD_CONFIG"].removeprefix("/app/"))
    settings = config.load(env)
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.amqp_url and settings.amqp_url.startswith("amqp://")
    assert settings.http_host == "0.0.0.0" and settings.api_keys     # public HTTP needs keys: load() checks it
    command = services["unsubd"]["command"]
    assert command[:2] == ["unsubd", "serve"]
    assert parse_roles(command[command.index("--role") + 1]) == ("smtp", "http", "consumer", "relay")


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert "HEALTHCHECK" in text and "/readyz" in text
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (REPO / copied).exists(), copied
