"""Several ext_authz worker processes, each on its own endpoint.

Envoy keeps one connection per upstream host and worker thread, so processes sharing one
port (SO_REUSEPORT) would not share the load; instead each worker listens on its own
endpoint (``ExtAuthzSettings.endpoints``) and the rendered Envoy cluster lists them all with
least-request balancing. The supervisor starts the workers, restarts one that dies, and on
SIGTERM/SIGINT passes the signal on so every worker finishes its in-flight checks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from prometheus_client import multiprocess

from gateway.config import GatewayConfig
from gateway.hangups import hangups_held, release_hangups
from gateway.observability.metrics import serve_metrics

ConfigLoader = Callable[[], GatewayConfig]

logger = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 1.0
STOP_GRACE_SECONDS = 10.0


def _worker_main(
    config: GatewayConfig, endpoint: str, index: int, load: ConfigLoader | None
) -> None:
    import asyncio

    from ext_authz.server import serve
    from gateway.observability.logs import configure_logging

    configure_logging(config.log_level, worker=index)
    if load is not None:
        # A restarted worker must run the configuration of the latest reload, not the one
        # the supervisor started with, under the same rule as a reload: what needs a restart
        # stays as its siblings run it. An unreadable file keeps the one it was given.
        from gateway.config.reload import reload_config

        config = reload_config(config, load) or config
    # The supervisor serves every worker's metrics summed (prometheus multiprocess mode).
    asyncio.run(serve(config, endpoint, load=load, metrics=False))


class Supervisor:
    def __init__(self, config: GatewayConfig, load: ConfigLoader | None = None) -> None:
        self._config = config
        self._load = load
        self._endpoints = config.ext_authz.endpoints()
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, BaseProcess] = {}
        self._stopping = False

    def _start(self, index: int) -> None:
        # The worker begins with SIGHUP held (the blocked mask survives fork and exec) and
        # lets it through once its handler is in: a reload sent while it imports waits
        # for it instead of killing it. So does the resource tracker multiprocessing starts.
        with hangups_held():
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(self._config, self._endpoints[index], index, self._load),
            name=f"ext_authz-{index}",
            daemon=False,
        )
        process.start()
        self._workers[index] = process
        logger.info(
            "worker started",
            extra={"worker": index, "pid": process.pid, "address": self._endpoints[index]},
        )

    def _request_stop(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _forward_hangup(self, signum: int, _frame: object) -> None:
        for process in self._workers.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)  # each worker reloads and validates

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGHUP, self._forward_hangup)
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        # prometheus_client reads this in each worker when it is imported there.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        serve_metrics(self._config.ext_authz.metrics_listen, multiprocess_dir=metrics_dir)
        for index in range(len(self._endpoints)):
            self._start(index)
        # Held since the process began (gateway.hangups), so that a SIGHUP before the
        # handler above was installed is forwarded now rather than fatal.
        release_hangups()
        while not self._stopping:
            time.sleep(0.2)
            for index, process in list(self._workers.items()):
                if not process.is_alive() and not self._stopping:
                    logger.error(
                        "worker died; restarting",
                        extra={"worker": index, "exitcode": process.exitcode},
                    )
                    if process.pid is not None:  # its gauges no longer count
                        multiprocess.mark_process_dead(process.pid)
                    time.sleep(RESTART_DELAY_SECONDS)
                    self._start(index)
        return self._stop_all()

    def _stop_all(self) -> int:
        for process in self._workers.values():
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: graceful in the worker
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        failed = 0
        for process in self._workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
                failed += 1
        return 1 if failed else 0


def run(config: GatewayConfig, load: ConfigLoader | None = None) -> int:
    """Serve with ``ext_authz.workers`` processes (in this process when it is one)."""
    if config.ext_authz.workers == 1:
        import asyncio

        from ext_authz.server import serve

        asyncio.run(serve(config, load=load))
        return 0
    return Supervisor(config, load).run()
