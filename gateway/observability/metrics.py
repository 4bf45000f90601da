"""Prometheus metrics shared by every component, and serving them on their own port.

Label values come from small fixed sets (route names from the config, reason codes,
provider ids, operation names written in the code), never from users, paths or tokens, so
cardinality stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)

from gateway.config import split_host_port

logger = logging.getLogger(__name__)

REDIS_SECONDS = Histogram(
    "gateway_redis_seconds",
    "Redis round trips by operation.",
    ["operation"],
    buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
REDIS_ERRORS = Counter(
    "gateway_redis_errors_total", "Redis failures (timeouts, refused, ...) by operation.",
    ["operation"],
)  # fmt: skip


@contextmanager
def timed_redis(operation: str) -> Iterator[None]:
    started = perf_counter()
    try:
        yield
    except BaseException:
        REDIS_ERRORS.labels(operation).inc()
        raise
    finally:
        REDIS_SECONDS.labels(operation).observe(perf_counter() - started)


def serve_metrics(listen: str | None, *, multiprocess_dir: str | None = None) -> None:
    """Expose /metrics on ``host:port`` from a background thread (None: do not serve).

    With ``multiprocess_dir``, serve the sum over all worker processes writing there.
    """
    if not listen:
        return
    host, port = split_host_port(listen)
    registry = REGISTRY
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    start_http_server(port, addr=host, registry=registry)
    logger.info("metrics listening", extra={"address": listen})
