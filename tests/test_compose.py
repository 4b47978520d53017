"""docker-compose.yml: valid against the Compose specification, and a deployment that scales (issue 11.20).

The Compose specification's JSON schema comes from a registry package (check-jsonschema vendors it)."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bot.runtime.cli import build_parser

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def sanad_commands() -> list[tuple[str, list[str]]]:
    """Every `sanad …` command of the file: services' commands and health checks."""
    found = []
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] == "sanad":
            found.append((name, command))
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and len(test) > 1 and test[0] == "CMD" and test[1] == "sanad":
            found.append((f"{name} health check", test[1:]))
    return found


def test_the_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(compose())]
    assert errors == []


@pytest.mark.parametrize(("where", "command"), sanad_commands(), ids=[w for w, _ in sanad_commands()])
def test_every_sanad_command_exists_in_the_cli(where: str, command: list[str]) -> None:
    args = build_parser().parse_args(command[1:])  # argparse exits on an unknown command or option
    assert callable(args.func)


def test_our_image_runs_nothing_but_the_sanad_cli() -> None:
    built = {name: s for name, s in compose()["services"].items() if "build" in s}
    assert built and all(s["command"][0] == "sanad" for s in built.values())


def test_gateway_replicas_publish_no_host_port_a_proxy_does() -> None:
    services = compose()["services"]
    assert "ports" not in services["gateway"]  # `--scale gateway=2` cannot clash on a host port
    published = [name for name, s in services.items() if s.get("ports")]
    assert published == ["proxy"]
    caddyfile = (COMPOSE.parent / "deploy" / "Caddyfile").read_text(encoding="utf-8")
    assert "dynamic a gateway 8000" in caddyfile


def test_rasa_replicas_serve_a_model_trained_once_read_only() -> None:
    services = compose()["services"]
    rasa, train = services["rasa"], services["rasa-train"]
    assert "train" not in " ".join(map(str, rasa["command"])) and "entrypoint" not in rasa
    assert all(v.endswith(":ro") for v in rasa["volumes"])
    assert rasa["depends_on"]["rasa-train"] == {"condition": "service_completed_successfully"}
    assert "rasa train" in " ".join(train["command"]) and "models:/models" in train["volumes"]


def test_rasas_http_api_is_behind_the_token_the_gateway_sends() -> None:
    document = compose()
    command = document["services"]["rasa"]["command"]
    assert command[command.index("--auth-token") + 1].startswith("${RASA_TOKEN")
    assert document["x-sanad-env"]["RASA_TOKEN"].startswith("${RASA_TOKEN")
    assert document["services"]["gateway"]["environment"]["RASA_TOKEN"] == document["x-sanad-env"]["RASA_TOKEN"]


def test_the_action_server_reaches_the_platform_by_a_configured_url() -> None:
    env = compose()["services"]["actions"]["environment"]
    urls = {k: v for k, v in env.items() if k.endswith("_URL")}
    assert "PLATFORM_API_URL" in urls and urls["SANAD_DEMO_PLATFORM_URL"] == "http://proxy:8000/demo-platform"
    # PUBLIC_BASE_URL is what the providers call, not what containers call each other at
    assert not [k for k, v in urls.items() if k != "PUBLIC_BASE_URL" and ("localhost" in v or "127.0.0.1" in v)]


def test_the_worker_health_check_reads_its_heartbeat() -> None:
    worker = compose()["services"]["worker"]
    assert worker["healthcheck"]["test"] == ["CMD", "sanad", "worker", "--check"]
