"""Which servers `make run` / run_stack starts for a configuration (the dev-port rule)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.processes import REPO_ROOT
from devtools.redis_persistence import REDIS_PERSISTENCE_ARGS
from devtools.stack_plan import (
    DEFAULT_DEV_PORTS,
    DEV_CLIENT_SECRET,
    Plan,
    PlanError,
    parse_dev_ports,
    plan_stack,
)
from gateway.config import parse_config

ENVIRON = {"GATEWAY_SECRET_KEYS": "plan-test-secret-0123456789abcdef-0123456789"}


def plan_for(raw: dict[str, Any], dev_ports=DEFAULT_DEV_PORTS, environ=ENVIRON) -> Plan:
    config = parse_config(raw, environ)
    return plan_stack(config, Path("gateway.yaml"), Path("run"), dev_ports, environ)


def repository_config() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((REPO_ROOT / "gateway.yaml").read_text("utf-8"))
    return raw


def names(plan: Plan) -> list[str]:
    return [server.name for server in plan.servers]


def test_the_repositorys_gateway_yaml_gets_its_dev_idps_and_echo_backend() -> None:
    plan = plan_for(repository_config())
    assert names(plan) == [
        "redis",
        "echo-backend-9000",
        "idp-primary",
        "idp-gitlab",
        "ext-authz",
        "login-app",
        "envoy",
    ]
    assert plan.dev_idps == {"primary": 9100, "gitlab": 9200}
    assert plan.external_providers == ()


def test_a_provider_off_the_dev_ports_is_used_as_configured() -> None:
    raw = repository_config()
    raw["providers"][0]["issuer"] = "http://127.0.0.1:8180/realms/dev"  # a local Keycloak
    plan = plan_for(raw)
    assert "idp-primary" not in names(plan)
    assert [p.id for p in plan.external_providers] == ["primary"]
    assert plan.dev_idps == {"gitlab": 9200}


def test_no_dev_ports_means_no_stand_ins_at_all() -> None:
    plan = plan_for(repository_config(), dev_ports=parse_dev_ports("none"))
    assert names(plan) == ["redis", "ext-authz", "login-app", "envoy"]
    assert [p.id for p in plan.external_providers] == ["primary", "gitlab"]


def test_the_dev_idp_and_the_gateway_share_the_client_secret_from_the_environment() -> None:
    environ = {**ENVIRON, "GATEWAY_PROVIDER_GITLAB_CLIENT_SECRET": "chosen-secret"}
    plan = plan_for(repository_config(), environ=environ)
    servers = {server.name: server for server in plan.servers}
    assert "gateway:chosen-secret:http://localhost:8080/auth/callback" in servers["idp-gitlab"].argv
    assert servers["login-app"].env["GATEWAY_PROVIDER_GITLAB_CLIENT_SECRET"] == "chosen-secret"
    assert servers["login-app"].env["GATEWAY_PROVIDER_PRIMARY_CLIENT_SECRET"] == DEV_CLIENT_SECRET


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # An oauth2 provider half on a dev port: a dev IdP would serve only part of it.
        (
            lambda raw: raw["providers"][1].update(token_url="https://gitlab.example.org/token"),
            "some endpoints are on a dev port",
        ),
        (
            lambda raw: raw["providers"][1].update(token_url="http://127.0.0.1:9200/oauth/token"),
            "serves it at path '/token'",
        ),
        (
            lambda raw: raw["providers"][0].update(issuer="http://127.0.0.1:9100/realms/dev"),
            "the dev IdP's issuer is http://127.0.0.1:9100 \\(no path\\)",
        ),
        (
            lambda raw: raw["providers"][0].update(issuer="http://127.0.0.1:9100/"),
            "no path",
        ),
        (
            lambda raw: raw["providers"][0].update(issuer="http://127.0.0.1:9200"),
            "share dev port 9200",
        ),
        (
            lambda raw: raw["routes"][0].update(upstream="http://127.0.0.1:9100"),
            "dev port 9100 is both a provider's and route api's",
        ),
    ],
)
def test_what_a_stand_in_cannot_serve_is_refused(change, message: str) -> None:
    raw = repository_config()
    change(raw)
    with pytest.raises(PlanError, match=message):
        plan_for(raw)


@pytest.mark.parametrize("text", ["", "9000,x", "70000", "0"])
def test_dev_ports_must_be_port_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dev_ports(text)


def test_make_runs_redis_keeps_every_acknowledged_write_in_the_run_directory() -> None:
    redis = next(
        server for server in plan_for(repository_config()).servers if server.name == "redis"
    )
    argv = list(redis.argv)
    # The persistence refreshed tokens need, from its one place: every save point is its own
    # `--save SECONDS CHANGES` (one argument "60 1" is no save point at all to Redis 6.2).
    persistence = list(REDIS_PERSISTENCE_ARGS)
    start = argv.index(persistence[0])
    assert argv[start : start + len(persistence)] == persistence
    assert argv[argv.index("--appendfsync") + 1] == "always"
    saves = [argv[i + 1 : i + 3] for i, arg in enumerate(argv) if arg == "--save"]
    assert saves and all(seconds.isdigit() and changes.isdigit() for seconds, changes in saves)
    assert argv[argv.index("--dir") + 1] == str(Path("run") / "redis")
