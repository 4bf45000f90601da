"""Faults that tests inject on the token endpoint through ``POST /_admin/faults``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from devtools.dev_idp.errors import AdminRequestError


class TokenEndpointFault(StrEnum):
    OK = "ok"
    ERROR_503 = "error503"
    SLOW = "slow"
    SLOW_503 = "slow503"  # hang, then fail without touching any token (a stalled provider)
    # Refuse every refresh as a request problem, as a provider that granted fewer scopes
    # than a refresh asks for does; code exchanges still work.
    REFRESH_INVALID_SCOPE = "refresh_invalid_scope"
    # Refuse every refresh as if the gateway's client secret were wrong.
    REFRESH_INVALID_CLIENT = "refresh_invalid_client"


@dataclass(frozen=True)
class FaultSettings:
    token_endpoint: TokenEndpointFault = TokenEndpointFault.OK
    slow_seconds: float = 3.0


class Faults:
    """The current fault settings, swapped atomically."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings = FaultSettings()

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def update(self, payload: dict[str, Any]) -> FaultSettings:
        """Apply ``{"token_endpoint": MODE, "slow_seconds": N}``, MODE a TokenEndpointFault."""
        unknown = set(payload) - {"token_endpoint", "slow_seconds"}
        if unknown:
            raise AdminRequestError(f"unknown fault settings: {sorted(unknown)}")
        with self._lock:
            current = self._settings
            try:
                mode = TokenEndpointFault(payload.get("token_endpoint", current.token_endpoint))
                slow = float(payload.get("slow_seconds", current.slow_seconds))
            except (TypeError, ValueError) as exc:
                raise AdminRequestError(f"invalid fault settings: {exc}") from exc
            if not 0 <= slow <= 60:
                raise AdminRequestError("slow_seconds must be between 0 and 60")
            self._settings = FaultSettings(mode, slow)
            return self._settings

    def reset(self) -> None:
        """Back to a healthy token endpoint."""
        with self._lock:
            self._settings = FaultSettings()
