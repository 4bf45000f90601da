"""Render the Kubernetes deployment's Envoy bootstrap from its gateway config.

    python deploy/render.py            # or: python -m deploy.render
    python deploy/render.py --check    # exit 1 when the committed file is stale

reads ``deploy/kubernetes/common/gateway.yaml`` and writes ``deploy/kubernetes/envoy.yaml``,
which kustomize's ``configMapGenerator`` turns into the Envoy ConfigMap. The output is exactly
what ``gateway render-envoy --config deploy/kubernetes/common/gateway.yaml`` prints; a test
fails when the committed file differs from a fresh render.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent
GATEWAY_CONFIG = DEPLOY_DIR / "kubernetes" / "common" / "gateway.yaml"
ENVOY_BOOTSTRAP = DEPLOY_DIR / "kubernetes" / "envoy.yaml"
# A valid config needs a server secret, though none reaches the output: a fixed placeholder
# keeps the render independent of the caller's environment.
RENDER_ENVIRONMENT = {"GATEWAY_SECRET_KEYS": "render-only-placeholder-secret-0123456789"}


def render(config_path: Path = GATEWAY_CONFIG) -> str:
    """The Envoy bootstrap for the gateway pod: ext_authz reached on its unix socket."""
    from gateway.config import load_config
    from gateway.envoy.render import render_envoy_yaml
    from gateway.errors import ConfigError

    config = load_config(config_path, RENDER_ENVIRONMENT)
    listen = config.ext_authz.listen
    if not listen.startswith("unix:"):
        # deployment.yaml shares the socket's directory with Envoy and probes the socket;
        # a TCP address would match neither.
        raise ConfigError(f"ext_authz.listen: the pod expects unix:/path, not {listen!r}")
    if config.envoy.listen_address != "0.0.0.0":
        raise ConfigError("envoy.listen_address: must be 0.0.0.0 so the Service reaches Envoy")
    return render_envoy_yaml(config, ext_authz_endpoints=[listen])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report a stale envoy.yaml")
    args = parser.parse_args(argv)
    from gateway.errors import ConfigError  # after __main__ has put the repository on the path

    try:
        fresh = render()
    except ConfigError as exc:
        print(f"{GATEWAY_CONFIG.relative_to(DEPLOY_DIR.parent)}: {exc}", file=sys.stderr)
        return 2
    target = ENVOY_BOOTSTRAP.relative_to(DEPLOY_DIR.parent)
    if args.check:
        current = ENVOY_BOOTSTRAP.read_text(encoding="utf-8") if ENVOY_BOOTSTRAP.exists() else ""
        if current != fresh:
            print(f"{target} is stale: run `python deploy/render.py`", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    ENVOY_BOOTSTRAP.write_text(fresh, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    # Run as a script, deploy/ is first on sys.path; the gateway package comes from the
    # repository root when it is not installed.
    sys.path.insert(1, str(DEPLOY_DIR.parent))
    sys.exit(main())
