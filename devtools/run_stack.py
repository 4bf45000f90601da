"""`make run`: the whole gateway on this machine, from gateway.yaml (or --config FILE).

Starts Redis, the ext_authz worker(s), the login app and Envoy, plus a demo server wherever
the configuration points at one of run_stack's dev ports (see --help); says the gateway is
up once every process it started is up; stops everything on Ctrl-C. Logs go to
.run/logs/. When GATEWAY_SECRET_KEYS is not set, a development secret is generated once
into .run/ (never committed) so sessions survive a restart of the stack.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devtools.processes import REPO_ROOT, ManagedProcess, can_listen, envoy_ready, listening
from devtools.provider_check import check_provider
from devtools.stack_plan import (
    DEFAULT_DEV_PORTS,
    Plan,
    PlanError,
    Server,
    parse_dev_ports,
    plan_stack,
)
from gateway.config import GatewayConfig, load_config, provider_secret_variable
from gateway.envoy.render import render_envoy_yaml
from gateway.errors import ConfigError

DEFAULT_CONFIG = REPO_ROOT / "gateway.yaml"
START_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.05

RULE = """\
Which servers run_stack starts itself:
  Always the ext_authz worker(s), the login app and Envoy; Redis when redis.url is a
  standalone server on 127.0.0.1 or localhost. And a demo server for every URL
  http://127.0.0.1:PORT or http://localhost:PORT whose PORT is a dev port (--dev-ports;
  the default 9000,9100,9200 are those of the repository's gateway.yaml):
    - a provider whose issuer (oidc) or endpoints (oauth2: /authorize, /token, /userinfo,
      /revoke) are on a dev port gets a dev identity provider there, with the users
      alice/alice and bob/bob;
    - a route whose upstream is on a dev port gets the echo backend there.
  Every other provider and backend is used as configured and never started. A provider's
  client secret comes from GATEWAY_PROVIDER_<ID>_CLIENT_SECRET; its discovery document
  (oidc) or endpoints (oauth2) are asked once, and a warning says when they do not answer.

"The gateway is up" is printed only when every process run_stack started is up. When one
cannot start (a port in use, an early exit), one line names it and the cause, and
everything started so far is stopped. Logs: DIR/logs (--run-dir), appended to.
"""


class StartFailure(Exception):
    """A process could not be started or stopped running; the message is the line to show."""


@dataclass(frozen=True)
class Running:
    server: Server
    process: ManagedProcess
    log_offset: int  # the log is appended to across runs: only what this run wrote counts

    def exited(self, during: str = " during start") -> str | None:
        """The line to show when the process has exited, else None."""
        assert self.process.process is not None
        status = self.process.process.poll()
        if status is None:
            return None
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        cause = lines[-1][:300] if lines else "no output"
        log = _shown(self.process.log_path)
        return f"{self.server.name} exited{during} (status {status}): {cause}; log: {log}"

    def output(self) -> str:
        with self.process.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.run_stack",
        description=__doc__.splitlines()[0],
        epilog=RULE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), metavar="FILE")
    parser.add_argument(
        "--dev-ports",
        type=parse_dev_ports,
        default=",".join(str(port) for port in sorted(DEFAULT_DEV_PORTS)),
        metavar="PORT,PORT|none",
        help="where run_stack stands in with a dev IdP or the echo backend (default: %(default)s)",
    )
    parser.add_argument(
        "--run-dir",
        default=str(REPO_ROOT / ".run"),
        metavar="DIR",
        help="logs (DIR/logs), Redis data, the Envoy bootstrap and the dev secret (default .run)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=START_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="how long each process may take to come up (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config_path = Path(args.config).resolve()
    run_dir = Path(args.run_dir).resolve()
    secret_keys = os.environ.get("GATEWAY_SECRET_KEYS") or _dev_secret(run_dir)
    environ = {**os.environ, "GATEWAY_SECRET_KEYS": secret_keys}
    try:
        config = load_config(config_path, environ)
        plan = plan_stack(config, config_path, run_dir, args.dev_ports, environ)
    except (ConfigError, PlanError) as exc:
        print(f"run_stack: invalid configuration: {exc}", file=sys.stderr)
        return 2

    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    started: list[Running] = []
    try:
        _check_ports_free(plan)
        (run_dir / "redis").mkdir(parents=True, exist_ok=True)
        (run_dir / "envoy.yaml").write_text(render_envoy_yaml(config))
        for server in plan.servers:
            running = _start(server, run_dir / "logs", args.start_timeout, lambda: stop_requested)
            started.append(running)
            if stop_requested:
                return 0
            _say(f"  started {server.name:<16} log: {_shown(running.process.log_path)}")
        _report_providers(plan)
        _check_still_running(started)
        if stop_requested:
            return 0
        _say_up(config, config_path, plan, run_dir)
        while not stop_requested:
            _check_still_running(started, during="")
            time.sleep(0.5)
        return 0
    except StartFailure as exc:
        print(f"run_stack: {exc}", file=sys.stderr)
        return 1
    finally:
        for running in reversed(started):
            running.process.stop()


def _check_ports_free(plan: Plan) -> None:
    """Fail before starting anything when an address a server needs is taken: a server
    that cannot bind may exit only after its port looked "open" (someone else's)."""
    seen: dict[str, str] = {}
    for server in plan.servers:
        for listener in server.listeners:
            address = listener.address
            if address in seen:
                raise StartFailure(
                    f"{server.name} cannot start: {address} ({listener.setting}) is also "
                    f"{seen[address]}"
                )
            seen[address] = f"{server.name}'s {listener.setting}"
            if not can_listen(address):
                where = address if address.startswith("unix:") else f"port {address}"
                hint = "; it is a dev port, where run_stack starts a stand-in (--dev-ports)"
                raise StartFailure(
                    f"{server.name} cannot start: {where} ({listener.setting}) is in use"
                    + (hint if server.stand_in else "")
                )


def _start(server: Server, log_dir: Path, timeout: float, stopping: Callable[[], bool]) -> Running:
    """Start ``server`` and wait until it is up; StartFailure when it exits or is not up
    within ``timeout`` (the process is stopped then)."""
    process = ManagedProcess(server.name, server.argv, env=dict(server.env), log_dir=log_dir)
    offset = process.log_path.stat().st_size if process.log_path.exists() else 0
    running = Running(server, process.start(lambda: True), offset)
    deadline = time.monotonic() + timeout
    try:
        while not stopping():
            failure = running.exited()
            if failure:
                raise StartFailure(failure)
            waiting_for = _not_up_yet(running)
            if waiting_for is None:
                return running
            if time.monotonic() > deadline:
                raise StartFailure(
                    f"{server.name} is not up after {timeout:g}s (no {waiting_for}); "
                    f"log: {_shown(process.log_path)}"
                )
            time.sleep(POLL_SECONDS)
        return running
    except BaseException:
        process.stop()
        raise


def _not_up_yet(running: Running) -> str | None:
    """What the server has not shown yet, or None when it is up."""
    server = running.server
    if server.announcement and server.announcement not in running.output():
        return f"{server.announcement!r} line"
    for listener in server.listeners:
        if listener.awaited and not listening(listener.address):
            return f"listener on {listener.address} ({listener.setting})"
    if server.envoy_admin_port is not None and not envoy_ready(server.envoy_admin_port):
        return f"ready answer from the admin interface on port {server.envoy_admin_port}"
    return None


def _check_still_running(started: list[Running], during: str = " during start") -> None:
    for running in started:
        failure = running.exited(during)
        if failure:
            raise StartFailure(failure)


def _report_providers(plan: Plan) -> None:
    """Warn about providers run_stack did not start that do not answer; claim nothing."""
    for provider in plan.external_providers:
        report = check_provider(provider)
        if report.answers:
            _say(f"  provider {provider.id:<15} not started here; {report.detail}")
        else:
            _warn(f"provider {provider.id}: {report.detail}")
        # An explicit method that needs a secret fails at load; unset, none is the default.
        has_key = provider.private_key or provider.private_key_file
        if provider.token_endpoint_auth_method is None and not (provider.client_secret or has_key):
            variable = provider_secret_variable(provider.id)
            _warn(f"provider {provider.id}: {variable} is not set (no client secret)")


def _say_up(config: GatewayConfig, config_path: Path, plan: Plan, run_dir: Path) -> None:
    url = config.public_url
    prefix = config.login_app.path_prefix
    protected = next(
        (r for r in config.routes if r.provider and not (r.public or r.anonymous)), None
    )
    dev = [p.id for p in config.providers if p.id in plan.dev_idps and p.login_sequence]
    others = [p.id for p in config.providers if p.id not in plan.dev_idps and p.login_sequence]
    if not others:
        how = "sign in as alice / alice at each dev identity provider"
    elif not dev:
        how = f"sign in at each provider ({', '.join(others)})"
    else:
        how = f"sign in as alice / alice at the dev identity providers ({', '.join(dev)}) and "
        how += f"with your account at the others ({', '.join(others)})"
    _say(f"\nThe gateway is up at {url}\n")
    _say(f"Log in with a browser: open {url}{protected.prefix if protected else '/'}hello and")
    _say(f"{how}. Log out: {prefix}/logout\n")
    if protected is None:
        _say("Press Ctrl-C to stop.")
        return
    _say("Create a session and call the demo backend through Envoy:")
    if "GATEWAY_SECRET_KEYS" not in os.environ:
        _say(f"  export GATEWAY_SECRET_KEYS=$(cat {_shown(run_dir / 'secret-key')})")
    config_option = "" if config_path == DEFAULT_CONFIG else f"--config {_shown(config_path)} "
    _say(
        f"  COOKIE=$(.venv/bin/gateway session create {config_option}--user alice "
        f"--token {protected.provider}=demo-token)"
    )
    _say(f"  curl -s -b {config.cookie_name}=$COOKIE {url}{protected.prefix}hello\n")
    _say("Press Ctrl-C to stop.")


def _dev_secret(run_dir: Path) -> str:
    path = run_dir / "secret-key"
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _shown(path: Path) -> str:
    """``path`` as a developer in the repository would type it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _warn(line: str) -> None:
    print(f"run_stack: warning: {line}", file=sys.stderr, flush=True)


def _say(line: str) -> None:
    # Flushed: whoever reads our output through a pipe must see "up" when it is said.
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
