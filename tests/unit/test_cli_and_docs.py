"""The `gateway` command's contract with scripts, and docs generated from the code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from joserfc.jwk import ECKey

from gateway.cli import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    build_parser,
    main,
)
from gateway.config import parse_config, provider_secret_variable
from gateway.config.reference import readme_block, render_reference

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"GATEWAY_SECRET_KEYS": "k" * 40}


def test_the_readme_carries_the_current_configuration_reference() -> None:
    block = readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block is not None, "README.md lacks the config-reference markers"
    assert block == render_reference(), (
        "README.md's configuration reference is stale: replace the block between the markers "
        "with the output of `gateway config-reference`"
    )


SUBCOMMANDS = [
    ["run"], ["config-reference"], ["check-config"], ["render-envoy"], ["authz"], ["login"],
    ["session", "create"], ["sessions", "list"], ["sessions", "revoke"], ["auth-login"],
]  # fmt: skip


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda words: "-".join(words))
def test_every_subcommand_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage: gateway" in capsys.readouterr().out


def test_unknown_subcommand_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == EXIT_USAGE


def test_check_config_exit_codes_and_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEYS", "k" * 40)
    assert main(["check-config", "--config", str(ROOT / "gateway.yaml")]) == EXIT_OK
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "gateway.yaml").read_text().replace("provider: gitlab", "provider: gitlabb", 1)
    )
    assert main(["check-config", "--config", str(bad)]) == EXIT_CONFIG
    assert "unknown provider 'gitlabb'" in capsys.readouterr().err
    assert main(["check-config", "--config", str(tmp_path / "missing.yaml")]) == EXIT_CONFIG


def test_redis_down_is_exit_code_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEYS", "k" * 40)
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    code = main(["sessions", "list", "--config", str(ROOT / "gateway.yaml")])
    assert code == EXIT_UNAVAILABLE


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["--user", "alice", "--token-ttl", "nan"], id="ttl-nan"),
        pytest.param(["--user", "alice", "--token-ttl", "inf"], id="ttl-infinite"),
        pytest.param(["--user", "alice", "--token-ttl", "1e300"], id="ttl-beyond-any-expiry"),
        pytest.param(["--user", "alice", "--token-ttl", "-5"], id="ttl-negative"),
        pytest.param(["--user", "alice", "--token-ttl", "soon"], id="ttl-not-a-number"),
        pytest.param(["--user", ""], id="empty-user"),
    ],
)
def test_session_create_refuses_unusable_arguments_as_a_usage_error(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["session", "create", "--config", str(ROOT / "gateway.yaml"), *arguments])
    assert exit_info.value.code == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_login_listen_from_the_command_line_is_validated_like_the_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEYS", "k" * 40)
    code = main(["login", "--config", str(ROOT / "gateway.yaml"), "--listen", "localhost"])
    assert code == EXIT_CONFIG
    assert "login_app.listen" in capsys.readouterr().err


def test_the_readme_s_provider_examples_load_and_expand_as_documented() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Identity providers", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    providers = yaml.safe_load(block)["providers"]
    environ = {
        **SECRETS,
        **{provider_secret_variable(p["id"]): "client-secret" for p in providers},
        "GATEWAY_PROVIDER_CORPORATE_PRIVATE_KEY": ECKey.generate_key("P-256")
        .as_pem(private=True)
        .decode(),
    }
    raw = {
        "public_url": "https://gateway.example.org",
        "providers": providers,
        "routes": [{"name": "r", "prefix": "/r/", "upstream": "http://127.0.0.1:1"}],
    }
    config = parse_config(raw, environ)
    presets = {p.preset for p in config.providers}
    assert presets == {"keycloak", "gitlab", "github", "jupyterhub", "google", "generic"}
    assert config.provider("keycloak").issuer == "https://id.example.org/realms/platform"
    assert config.provider("jupyterhub").token_url == (
        "https://hub.example.org/hub/api/oauth2/token"
    )
    assert config.provider("corporate").claims.groups == ("roles", "groups")
