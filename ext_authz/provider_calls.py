"""The threads that call identity providers from an ext_authz worker, apart from all else.

requests (under Authlib) blocks, so a refresh runs in a thread. Not in asyncio's default
executor: that one also resolves host names (``loop.getaddrinfo``, used whenever a Redis
client connects to a server named by host name), so a provider that stalls would hold
every one of its threads and make sessions that need no refresh wait for DNS, then fail
(503). Here a small pool of their own bounds what provider calls can occupy; beyond it,
refreshes queue (their checks stop waiting after ``tokens.refresh_wait`` as always).

Issue 16 may move refreshes to an async HTTP client (Authlib's httpx integration), which
would make this pool unnecessary; issue 12 accepts a bounded pool.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

# A worker refreshes rarely (once per token lifetime and session, across all workers):
# a few threads keep up with that, and bound what a stalled provider can hold.
PROVIDER_THREADS = 4

P = ParamSpec("P")
R = TypeVar("R")


class ProviderCalls:
    """A bounded thread pool for blocking provider calls, with named threads."""

    def __init__(self, max_workers: int = PROVIDER_THREADS) -> None:
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="provider-call")

    async def run(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``call(*args, **kwargs)`` in one of the pool's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(call, *args, **kwargs))

    def shutdown(self) -> None:
        """Take no more calls; calls already submitted still run to their own timeout (they
        may rotate a refresh token), and nothing here waits for them (the loop never
        blocks)."""
        self._pool.shutdown(wait=False)
