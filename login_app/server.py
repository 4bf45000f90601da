"""Serve the login app with a threaded WSGI server; SIGHUP reloads what
gateway.config.reload allows (both servers follow the same rule)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable

from werkzeug.serving import make_server

from gateway.config import GatewayConfig, join_host_port, split_host_port
from gateway.config.reload import reload_config
from gateway.hangups import release_hangups
from gateway.observability.metrics import serve_metrics
from login_app import create_app
from login_app.services import build_services, init_app, services_of

logger = logging.getLogger(__name__)


class _Reloads:
    """Runs ``reload`` in a thread of its own after each SIGHUP.

    A Python signal handler is entered again by the next signal before it returns: under a
    storm of SIGHUPs, reloads run inside reloads in the main thread until the recursion limit
    ends the server. The handler here only writes a byte to a pipe, which stays safe however
    often it is re-entered; the thread takes every byte that came and reloads once for them,
    so each SIGHUP is followed by a reload that began after it (reading the file as it is).
    """

    def __init__(self, reload: Callable[[], None]) -> None:
        self._reload = reload
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        threading.Thread(target=self._run, name="reload", daemon=True).start()

    def on_signal(self, _signum: int, _frame: object) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a reload is due
            os.write(self._write, b"\0")

    def _run(self) -> None:
        while True:
            os.read(self._read, 4096)
            try:
                self._reload()
            except Exception:  # the running services serve on, as for a refused file
                logger.exception("reload failed; keeping the running configuration")


def serve(
    config: GatewayConfig,
    listen: str | None = None,
    load: Callable[[], GatewayConfig] | None = None,
) -> None:
    serve_metrics(config.login_app.metrics_listen)
    host, port = split_host_port(listen or config.login_app.listen, any_port=True)
    app = create_app(config)
    # Werkzeug picks the address family from the host: "::1" serves on IPv6.
    server = make_server(host, port, app, threaded=True)

    running = [config]

    def reload() -> None:
        if load is None:
            return
        fresh = reload_config(running[0], load)
        if fresh is None:
            return
        running[0] = fresh
        # Requests under way keep the services they started with. The Redis section is
        # kept by the reload, so the running client (and its pool) serves on.
        init_app(app, build_services(fresh, services_of(app).redis))
        logging.getLogger().setLevel(fresh.log_level.upper())
        logger.info("configuration reloaded", extra={"providers": len(fresh.providers)})

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)  # leaves serve_forever; a request under way is cut short

    signal.signal(signal.SIGHUP, _Reloads(reload).on_signal)
    signal.signal(signal.SIGTERM, stop)
    # Held since the process began (gateway.hangups): one that came meanwhile reloads now.
    release_hangups()
    logger.info("login app listening", extra={"address": join_host_port(host, server.server_port)})
    server.serve_forever()
