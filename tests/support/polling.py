"""Waiting for a state, never for a time: poll a condition up to a generous deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Return once ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds
    (generous: the machines running the tests are shared and busy)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
