"""docker-compose.yml and the Dockerfile agree with the configuration and the CLI (no Docker here)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.cli import build_parser
from cds_service.config import Settings

ROOT = Path(__file__).parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
SETTING_NAMES = {f"CDS_{f.name.upper()}" for f in fields(Settings) if f.name != "extra"}
PENDING_COMMANDS = {"mllp": "the MLLP listener arrives with issue #4"}


def _commands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


def test_every_cds_variable_is_a_setting() -> None:
    used = set(re.findall(r"\bCDS_[A-Z0-9_]+", COMPOSE_TEXT + DOCKERFILE))
    assert used - SETTING_NAMES == set()


def test_services_are_wired() -> None:
    services = COMPOSE["services"]
    assert {"web", "mllp", "postgres", "hapi", "migrate"} <= set(services)
    assert services["postgres"]["image"] == "postgres:16"
    assert services["hapi"]["image"].startswith("hapiproject/hapi")
    env = services["web"]["environment"]
    assert env["CDS_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["CDS_DATABASE_URL"]
    assert env["CDS_FHIR_BASE"] == "http://hapi:8080/fhir"
    assert env["CDS_AUTH"] == "jwt"
    for name in ("CDS_TRUSTED_ISSUERS", "CDS_EVENTS_TOKEN", "CDS_SECRET", "CDS_FHIR_ALLOWLIST"):
        assert env[name], name
        assert services["mllp"]["environment"][name] == env[name]


def test_environment_is_accepted_by_settings() -> None:
    env = {k: str(v) for k, v in COMPOSE["services"]["web"]["environment"].items()}
    env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
    env = {k: re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "x", v) for k, v in env.items()}
    settings = Settings.from_env(env)
    assert settings.extra == {}


@pytest.mark.parametrize(("service", "setting"), [("web", "http_port"), ("mllp", "mllp_port")])
def test_ports_agree_with_defaults(service: str, setting: str) -> None:
    default = getattr(Settings(), setting)
    svc = COMPOSE["services"][service]
    assert any(str(p).endswith(f":{default}:{default}") for p in svc["ports"])
    env_name = f"CDS_{setting.upper()}"
    assert int(svc["environment"][env_name]) == default
    assert f"{env_name}={default}" in DOCKERFILE


@pytest.mark.parametrize("service", ["web", "mllp", "migrate"])
def test_commands_exist(service: str) -> None:
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "cds-service"
    if command[1] in PENDING_COMMANDS and command[1] not in _commands():
        pytest.skip(PENDING_COMMANDS[command[1]])
    assert command[1] in _commands()


def test_dockerfile_is_non_root_with_healthcheck() -> None:
    assert DOCKERFILE.startswith("#") and "FROM python:3.11-slim" in DOCKERFILE
    assert re.search(r"^USER cds$", DOCKERFILE, re.M)
    assert "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE
    assert 'CMD ["cds-service", "serve"]' in DOCKERFILE
