"""The ``gateway`` command.

Subcommands import their front-end lazily, so ``gateway check-config`` does not load gRPC
and the shared package never imports a front-end at import time.

Exit codes: 0 success, 2 usage error, 3 invalid configuration, 4 Redis (or the gateway)
unavailable, 5 not found, 6 login denied or expired, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from gateway.config import MAX_DURATION_SECONDS, GatewayConfig, load_config, parse_config
from gateway.errors import ConfigError, StoreUnavailable
from gateway.hangups import hold_hangups, release_hangups

EXIT_OK, EXIT_USAGE, EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 0, 2, 3, 4, 5
EXIT_LOGIN_FAILED, EXIT_INTERRUPTED = 6, 130


def _config(args: argparse.Namespace) -> GatewayConfig:
    return load_config(args.config, os.environ)


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"ok: {len(config.routes)} routes, {len(config.providers)} providers")
    return EXIT_OK


def _cmd_render_envoy(args: argparse.Namespace) -> int:
    from gateway.envoy.render import render_envoy_yaml

    config = _config(args)
    endpoints = args.ext_authz_endpoint or None
    sys.stdout.write(render_envoy_yaml(config, ext_authz_endpoints=endpoints))
    return EXIT_OK


def _cmd_authz(args: argparse.Namespace) -> int:
    from ext_authz.workers import run
    from gateway.observability.logs import configure_logging

    config = _config(args)
    overrides = {
        key: value
        for key, value in (
            ("listen", args.listen),
            ("workers", args.workers),
            ("metrics_listen", args.metrics_listen),
        )
        if value is not None
    }
    if overrides:
        config = parse_config(_with_overrides(config, "ext_authz", overrides))
    configure_logging(config.log_level)
    return run(config, _Reloader(args.config, overrides))


class _Reloader:
    """Reads the config file again for a SIGHUP (picklable: worker processes get it too)."""

    def __init__(self, path: str, ext_authz_overrides: dict[str, object]) -> None:
        self._path = path
        self._overrides = ext_authz_overrides

    def __call__(self) -> GatewayConfig:
        config = load_config(self._path, os.environ)
        if not self._overrides:
            return config
        return parse_config(_with_overrides(config, "ext_authz", self._overrides))


def _with_overrides(config: GatewayConfig, section: str, values: dict[str, object]) -> dict:
    """The config as data with some keys of one section replaced (validated again after)."""
    raw = config.model_dump(mode="json")
    raw[section].update(values)
    return raw


def _cmd_login(args: argparse.Namespace) -> int:
    from gateway.observability.logs import configure_logging
    from login_app.server import serve

    config = _config(args)
    if args.listen is not None:  # validated like the file's login_app.listen
        config = parse_config(_with_overrides(config, "login_app", {"listen": args.listen}))
    configure_logging(config.log_level)
    serve(config, None, _Reloader(args.config, {}))
    return EXIT_OK


def _parse_token(text: str) -> tuple[str, str]:
    provider, sep, token = text.partition("=")
    if not sep or not provider or not token:
        raise argparse.ArgumentTypeError("use PROVIDER=ACCESS_TOKEN")
    return provider, token


def _subject(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a session needs a non-empty user id")
    return text


def _seconds(text: str) -> float:
    problem = "give a number of seconds from 0 to ten years"
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if not 0 <= seconds <= MAX_DURATION_SECONDS:  # also refuses nan
        raise argparse.ArgumentTypeError(problem)
    return seconds


def _cmd_session_create(args: argparse.Namespace) -> int:
    """Create a session directly in Redis and print its credential (for tests and demos)."""
    from gateway.sessions.factory import sync_store
    from gateway.sessions.model import Identity, TokenSet

    config = _config(args)
    now = time.time()
    token_expiry = int(now + args.token_ttl) if args.token_ttl else 0
    known = {provider.id for provider in config.providers}
    tokens = {}
    for provider_id, access_token in args.token:
        if provider_id not in known:
            print(f"error: unknown provider {provider_id!r}", file=sys.stderr)
            return EXIT_USAGE
        tokens[provider_id] = TokenSet(access_token=access_token, expires_at=token_expiry)
    identity = Identity(
        subject=args.user, email=args.email or "", name=args.name or "", groups=tuple(args.group)
    )
    credential, _ = sync_store(config).create(identity, tokens, now)
    print(credential.encode())
    return EXIT_OK


def _cmd_sessions_list(args: argparse.Namespace) -> int:
    from gateway.sessions.factory import session_admin

    summaries = session_admin(_config(args)).list_sessions(args.user)
    if args.json:
        print(json.dumps([asdict(s) for s in summaries], indent=2))
        return EXIT_OK
    header = ("SESSION", "USER", "CREATED (UTC)", "EXPIRES (UTC)")
    print(f"{header[0]:<18} {header[1]:<24} {header[2]:<20} {header[3]:<20} STATE   PROVIDERS")
    for s in summaries:
        print(
            f"{s.lookup_id[:16]:<18} {s.subject[:24]:<24} {_utc(s.created_at):<20} "
            f"{_utc(s.expires_at):<20} {'active' if s.active else 'ended ':<7} "
            f"{','.join(s.providers)}"
        )
    return EXIT_OK


def _cmd_sessions_revoke(args: argparse.Namespace) -> int:
    from gateway.sessions.factory import session_admin

    admin = session_admin(_config(args))
    if args.user is not None:
        ended = admin.revoke_user(args.user)
        print(f"revoked {ended} session(s) of {args.user}")
        return EXIT_OK if ended else EXIT_NOT_FOUND
    try:
        found = admin.revoke_session(args.session)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if found is None:
        print(f"no session starts with {args.session!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"revoked session {found.lookup_id[:16]} of {found.subject}")
    return EXIT_OK


def _cmd_auth_login(args: argparse.Namespace) -> int:
    """Log this terminal in through a browser and print the session credential."""
    from gateway.device_client import DeviceLoginError, device_login

    def tell(message: str) -> None:
        print(message, file=sys.stderr)  # stdout carries only the token: TOKEN=$(gateway ...)

    try:
        token = device_login(args.url, open_browser=not args.no_browser, printer=tell)
    except DeviceLoginError as exc:
        print(f"login failed: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE if exc.error == "unavailable" else EXIT_LOGIN_FAILED
    print(token)
    return EXIT_OK


def _cmd_config_reference(args: argparse.Namespace) -> int:
    from gateway.config.reference import render_reference

    print(render_reference())
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    """ext_authz and the login app together, as child processes; Envoy and Redis run apart."""
    import signal
    import subprocess

    _config(args)  # fail here, with the reason, rather than in a child
    children = [
        subprocess.Popen([sys.executable, "-m", "gateway.cli", command, "--config", args.config])
        for command in ("authz", "login")
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    # Held since main() began, and so in both children from their first instruction (they
    # let it through once they can reload): one that came meanwhile is forwarded now.
    release_hangups()
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    forward(signal.SIGTERM, None)  # one ended: stop the other too
    return max(child.wait() for child in children)


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="The authentication gateway: its servers and its operator commands.",
        epilog="Exit codes: 0 ok, 2 usage, 3 invalid configuration, 4 Redis or gateway "
        "unavailable, 5 not found, 6 login denied or expired, 130 interrupted.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=os.environ.get("GATEWAY_CONFIG", "gateway.yaml"),
        help="gateway YAML config (default: $GATEWAY_CONFIG or ./gateway.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", parents=[common], help="run ext_authz and the login app together"
    )
    run.set_defaults(handler=_cmd_run)

    reference = commands.add_parser(
        "config-reference", help="print the configuration reference (Markdown)"
    )
    reference.set_defaults(handler=_cmd_config_reference)

    check = commands.add_parser(
        "check-config", parents=[common], help="validate the configuration and exit"
    )
    check.set_defaults(handler=_cmd_check_config)

    render = commands.add_parser(
        "render-envoy", parents=[common], help="print the Envoy bootstrap YAML"
    )
    render.add_argument(
        "--ext-authz-endpoint",
        action="append",
        metavar="ADDR",
        help="host:port or unix:/path of an ext_authz worker (repeatable)",
    )
    render.set_defaults(handler=_cmd_render_envoy)

    authz = commands.add_parser(
        "authz", parents=[common], help="run the ext_authz server (and its worker processes)"
    )
    authz.add_argument(
        "--listen", help="first worker's host:port or unix:/path (default from config)"
    )
    authz.add_argument("--workers", type=int, help="worker processes (default from config)")
    authz.add_argument("--metrics-listen", help="host:port for /metrics (default from config)")
    authz.set_defaults(handler=_cmd_authz)

    login = commands.add_parser("login", parents=[common], help="run the login app")
    login.add_argument("--listen", help="host:port (default from config)")
    login.set_defaults(handler=_cmd_login)

    session = commands.add_parser("session", help="work with one session")
    session_commands = session.add_subparsers(dest="session_command", required=True)
    create = session_commands.add_parser(
        "create", parents=[common], help="create a session in Redis and print its credential"
    )
    create.add_argument("--user", required=True, type=_subject, help="the subject (user id)")
    create.add_argument("--email")
    create.add_argument("--name")
    create.add_argument("--group", action="append", default=[])
    create.add_argument(
        "--token", action="append", default=[], type=_parse_token, metavar="PROVIDER=TOKEN"
    )
    create.add_argument(
        "--token-ttl", type=_seconds, default=0, help="seconds until the tokens expire (0: never)"
    )
    create.set_defaults(handler=_cmd_session_create)

    sessions = commands.add_parser("sessions", help="list and revoke sessions (operators)")
    sessions_commands = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sessions_commands.add_parser(
        "list", parents=[common], help="list sessions, of one user or of everyone"
    )
    listing.add_argument("--user", help="only this subject's sessions")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_cmd_sessions_list)
    revoke = sessions_commands.add_parser(
        "revoke", parents=[common], help="end sessions now, at every replica"
    )
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="end every session of this subject")
    target.add_argument("--session", help="end the session whose id starts with this")
    revoke.set_defaults(handler=_cmd_sessions_revoke)

    auth_login = commands.add_parser(
        "auth-login", help="log this terminal in through a browser and print a session token"
    )
    auth_login.add_argument(
        "--url", required=True, metavar="PUBLIC_URL", help="the gateway's public URL"
    )
    auth_login.add_argument(
        "--no-browser", action="store_true", help="print the address instead of opening it"
    )
    auth_login.set_defaults(handler=_cmd_auth_login)
    return parser


# The servers reload on SIGHUP; until their handler is in, it is held (gateway.hangups).
SERVER_COMMANDS = ("authz", "login", "run")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] and arguments[0] in SERVER_COMMANDS:
        hold_hangups()  # first: a SIGHUP while this server starts must not be its end
    args = build_parser().parse_args(arguments)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreUnavailable as exc:
        print(f"redis unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
