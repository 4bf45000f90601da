"""Open-loop load at a fixed rate, for honest latency percentiles.

wrk is closed-loop: each connection sends its next request only after the previous answer,
so when the server stalls the client stops sending and the slow period is sampled by one
request instead of hundreds ("coordinated omission"). wrk2, which fixes that, is not packaged
in Debian. h2load's pacing does not do either: ``--rps`` releases requests in bursts on a
10 ms timer (``max(0.01, 1/rps)`` in its source), and ``--timing-script-file`` schedules each
request relative to the previous one, so timer lateness accumulates and the achieved rate
drifts well below the asked one (4,500/s asked, ~3,000/s sent on a 2-CPU machine); both
time a request from when it is finally written. Hence this small generator, used for HTTP/1.1
here and for gRPC in ``bench.openloop_grpc``:

- the pacer decides when each request is due: request ``i`` at ``start + i / rate``, an
  absolute schedule that never drifts;
- a due request goes out at once on a free slot (an idle keep-alive connection, or a free
  HTTP/2 stream), or waits in a queue until one frees up;
- its latency runs from the moment the pacer found it due to the end of the answer, so
  queueing behind a slow server is counted, as wrk2 does.

What is not counted is the pacer's own timer granularity: asyncio wakes up to ~1 ms late
(epoll timeouts are whole milliseconds), and a request due in between is timed from that
wake-up rather than its ideal instant, so a 0.2 ms server does not look like a 0.7 ms one.
That lateness is reported as ``send_lag_ms`` so a generator that falls behind is visible.
Requests still unanswered when the run ends count as ``unfinished`` and enter the
percentiles with the time they had waited so far, so an overloaded server cannot look fast.
The generator shares the machine's CPUs with the servers; its cost is part of the caveats.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class Sender(Protocol):
    def send(self, due: float) -> None: ...
    def in_flight(self) -> Iterable[float]: ...
    def close(self) -> None: ...


class Pacer:
    """Dispatches due requests to free slots and records what happened to each."""

    def __init__(self) -> None:
        self.senders: list[Sender] = []
        self.idle: deque[Sender] = deque()
        self.backlog: deque[float] = deque()
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.statuses: dict[int, int] = {}
        self.socket_errors = 0

    def add(self, sender: Sender, slots: int) -> None:
        self.senders.append(sender)
        self.idle.extend([sender] * slots)

    def dispatch(self, due: float) -> None:
        if self.idle:
            self.idle.popleft().send(due)
        else:
            self.backlog.append(due)

    def answered(self, sender: Sender, status: int, due: float) -> None:
        self.latencies.append(time.monotonic() - due)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if self.backlog:
            sender.send(self.backlog.popleft())
        else:
            self.idle.append(sender)

    def lost(self, sender: Sender) -> None:
        self.socket_errors += len(list(sender.in_flight()))
        self.idle = deque(s for s in self.idle if s is not sender)
        self.senders = [s for s in self.senders if s is not sender]

    def outstanding(self) -> list[float]:
        return [due for s in self.senders for due in s.in_flight()] + list(self.backlog)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def paced_run(pacer: Pacer, rate: float, duration: float) -> dict[str, Any]:
    """Send ``rate`` requests a second for ``duration`` seconds through ``pacer``."""
    total = max(1, round(rate * duration))
    start = time.monotonic()
    sent = 0
    while sent < total:
        now = time.monotonic()
        due_count = min(total, int((now - start) * rate) + 1)
        while sent < due_count:
            pacer.lags.append(now - (start + sent / rate))
            pacer.dispatch(now)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    drain_until = time.monotonic() + min(5.0, max(1.0, duration / 2))
    while pacer.outstanding() and time.monotonic() < drain_until:
        await asyncio.sleep(0.01)
    ended = time.monotonic()
    unfinished = [ended - due for due in pacer.outstanding()]
    for sender in pacer.senders:
        sender.close()
    latencies = sorted(pacer.latencies + unfinished)
    lags = sorted(pacer.lags)
    completed = len(pacer.latencies)
    achieved = completed / max(ended - start, 1e-9)
    return {
        "target_rps": round(rate, 1),
        "achieved_rps": round(achieved, 1),
        "sent": sent,
        "completed": completed,
        "unfinished": len(unfinished),
        "socket_errors": pacer.socket_errors,
        "statuses": {str(code): count for code, count in sorted(pacer.statuses.items())},
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p90_ms": round(percentile(latencies, 0.90) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
        "send_lag_ms": {
            "p50": round(percentile(lags, 0.50) * 1000, 3),
            "p99": round(percentile(lags, 0.99) * 1000, 3),
        },
        "overloaded": bool(unfinished) or achieved < 0.95 * rate,
    }


def run_paced(setup: Callable[[Pacer], Awaitable[None]], rate: float, duration: float) -> Any:
    """Open the connections (``setup``), then pace; the garbage collector stays off meanwhile,
    since one of its pauses would show up as server latency."""

    async def main() -> dict[str, Any]:
        pacer = Pacer()
        await setup(pacer)
        return await paced_run(pacer, rate, duration)

    gc.collect()
    gc.disable()
    try:
        return asyncio.run(main())
    finally:
        gc.enable()


class _Http1Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answers framed by content-length."""

    def __init__(self, pacer: Pacer, request: bytes) -> None:
        self._pacer = pacer
        self._request = request
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._due: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP connection

    def send(self, due: float) -> None:
        self._due = due
        assert self._transport is not None
        self._transport.write(self._request)

    def in_flight(self) -> Iterable[float]:
        return () if self._due is None else (self._due,)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            match = _CONTENT_LENGTH.search(self._buffer, 0, end + 2)
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(self._buffer) < total or self._due is None:
                return
            status = int(self._buffer[9:12])
            del self._buffer[:total]
            due, self._due = self._due, None
            self._pacer.answered(self, status, due)

    def connection_lost(self, exc: Exception | None) -> None:
        self._pacer.lost(self)
        self._due = None


def run_open_loop(
    url: str, headers: dict[str, str], rate: float, duration: float, connections: int = 64
) -> dict[str, Any]:
    """GET ``url`` ``rate`` times a second for ``duration`` seconds over keep-alive
    connections; latency percentiles timed from each request's due time. 64 connections:
    a server that keeps up with the rates measured here never has them all busy."""
    parts = urlsplit(url)
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def setup(pacer: Pacer) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(connections):
            _, connection = await loop.create_connection(
                lambda: _Http1Connection(pacer, request), parts.hostname or "", parts.port or 80
            )
            pacer.add(connection, 1)

    result: dict[str, Any] = run_paced(setup, rate, duration)
    tool = f"bench.openloop (HTTP/1.1, {connections} connections, timed from due time)"
    return {"tool": tool, **result}
