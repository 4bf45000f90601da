"""Reading single values out of a provider's JSON, where any type may arrive."""

from __future__ import annotations

from typing import Any


def required_str(value: Any) -> str:
    """``value`` if it is a non-empty string; TypeError otherwise (the caller translates it)."""
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def optional_str(value: Any) -> str | None:
    """``value`` if it is a non-empty string, else None: a provider's ``""`` or ``5`` is absent."""
    return value if isinstance(value, str) and value else None
