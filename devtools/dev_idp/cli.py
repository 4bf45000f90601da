"""``python -m devtools.dev_idp``: parse flags, bind, print the listening line, serve.

The server binds before the app is built so that ``--port 0`` works: the issuer then
defaults to the port actually bound, which the "listening" line reports.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from devtools.dev_idp.app import create_app
from devtools.dev_idp.config import (
    DEFAULT_USER,
    IdpConfig,
    Mode,
    parse_client_spec,
    parse_user_spec,
)
from devtools.dev_idp.errors import ConfigError

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def build_parser() -> argparse.ArgumentParser:
    """The command line described in the package docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.dev_idp",
        description="A development OAuth 2.0 / OpenID Connect provider (not for production).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=9100, help="0 picks a free port")
    parser.add_argument("--issuer", help="default: http://HOST:PORT (the bound port)")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.OIDC.value)
    parser.add_argument(
        "--client",
        action="append",
        required=True,
        metavar="ID:SECRET:REDIRECT_URI[,URI2]",
        help="register a confidential client (repeatable)",
    )
    parser.add_argument(
        "--user",
        action="append",
        metavar="USERNAME:PASSWORD[:EMAIL[:FULL NAME[:GROUP1+GROUP2]]]",
        help=f"add a user (repeatable); default {DEFAULT_USER.username}:{DEFAULT_USER.password}",
    )
    parser.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help="allowed after end-session, for every client (repeatable)",
    )
    parser.add_argument("--backchannel-logout-uri", metavar="URI")
    parser.add_argument("--access-token-ttl", type=int, default=300, metavar="SECONDS")
    parser.add_argument("--refresh-token-ttl", type=int, default=1800, metavar="SECONDS")
    parser.add_argument("--authorization-code-ttl", type=int, default=60, metavar="SECONDS")
    parser.add_argument(
        "--rotate-refresh-tokens", action=argparse.BooleanOptionalAction, default=True
    )
    parser.add_argument("--require-pkce", action=argparse.BooleanOptionalAction, default=True)
    return parser


def config_from_args(args: argparse.Namespace, bound_port: int) -> IdpConfig:
    """Turn parsed flags into the typed configuration; raises ConfigError."""
    users = tuple(parse_user_spec(spec) for spec in args.user) if args.user else (DEFAULT_USER,)
    return IdpConfig(
        issuer=args.issuer or f"http://{args.host}:{bound_port}",
        clients=tuple(parse_client_spec(spec) for spec in args.client),
        users=users,
        mode=Mode(args.mode),
        post_logout_redirect_uris=tuple(args.post_logout_redirect_uri),
        backchannel_logout_uri=args.backchannel_logout_uri,
        access_token_ttl=args.access_token_ttl,
        refresh_token_ttl=args.refresh_token_ttl,
        rotate_refresh_tokens=args.rotate_refresh_tokens,
        require_pkce=args.require_pkce,
        authorization_code_ttl=args.authorization_code_ttl,
        # Cookies ignore ports, so two providers on one host need distinct cookie names.
        session_cookie_name=f"dev_idp_session_{bound_port}",
    )


def run_server(args: argparse.Namespace) -> tuple[BaseWSGIServer, int]:
    """Bind (port 0 allowed), build the app for the bound port, return the server."""
    server = make_server(args.host, args.port, _not_ready, threaded=True)
    bound_port = server.server_port
    try:
        server.app = create_app(config_from_args(args, bound_port))
    except BaseException:
        server.server_close()
        raise
    return server, bound_port


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; exit 2 on a bad command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Authlib refuses plain-http OAuth requests unless this is set; the provider exists to
    # serve http://127.0.0.1 during development.
    os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
    try:
        server, bound_port = run_server(args)
    except ConfigError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"dev-idp: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in SHUTDOWN_SIGNALS:
        signal.signal(signum, request_stop)
    # Serve from a worker thread so the main thread can wait for a signal and then call
    # shutdown(), which must not run on the serving thread itself.
    serving = threading.Thread(target=server.serve_forever, name="dev-idp", daemon=True)
    serving.start()
    print(f"dev-idp listening on http://{args.host}:{bound_port}", flush=True)
    while not stop.wait(timeout=0.5):
        pass
    server.shutdown()
    server.server_close()
    serving.join(timeout=5)
    print("dev-idp stopped", file=sys.stderr, flush=True)
    return 0


def _port(text: str) -> int:
    # Checked here: werkzeug resolves the address with getaddrinfo, which quietly turns
    # 70000 into 70000 - 65536 (and a negative port ends in a traceback).
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def _not_ready(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    # Never called: the real app replaces it before serving starts.
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting\n"]
