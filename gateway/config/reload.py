"""What a SIGHUP may change in a running server, decided here for both servers.

ext_authz and the login app share sessions through Redis and the browser's cookie: if a
reload let one of them take a new ``redis.key_prefix`` or ``session.cookie_name`` and not
the other, new logins would be written where ext_authz does not look. So both apply the
same rule: the sections below keep their running value until a restart (of both servers),
with a warning naming each changed key; everything else takes effect at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gateway.config.loading import parse_config
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError

logger = logging.getLogger(__name__)

# Section -> why a running server cannot take a new value.
RESTART_ONLY: dict[str, str] = {
    "public_url": "cookies, callback URLs and origins are fixed at start",
    "session": "the cookie name, keys and lifetimes both servers must share",
    "redis": "the connections, and the keys both servers must agree on",
    "ext_authz": "its sockets, workers and metrics port",
    "login_app": "its socket, path prefix and metrics port",
    "envoy": "Envoy's listeners change only with a re-render and an Envoy restart",
}


def changed_keys(current: GatewayConfig, fresh: GatewayConfig, section: str) -> list[str]:
    """Dotted names of the keys of ``section`` whose value differs (the section when scalar)."""
    return _differences(
        current.model_dump(mode="json")[section], fresh.model_dump(mode="json")[section], section
    )


def _differences(old: Any, new: Any, key: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for name in sorted(old.keys() | new.keys()):
            found += _differences(old.get(name), new.get(name), f"{key}.{name}")
        return found
    return [] if old == new else [key]


def reloaded(current: GatewayConfig, fresh: GatewayConfig) -> GatewayConfig:
    """The configuration a running server switches to on SIGHUP: ``fresh``, except that
    every restart-only section keeps its running value (a warning names each changed key).

    Raises :class:`ConfigError` when the mix is not a valid configuration."""
    for section in RESTART_ONLY:
        for key in changed_keys(current, fresh, section):
            logger.warning(
                "reload: %s needs a restart of both servers; keeping the running value",
                key,
                extra={"key": key, "section": section},
            )
    raw = fresh.model_dump(mode="json")
    running = current.model_dump(mode="json")
    raw.update({section: running[section] for section in RESTART_ONLY})
    # Validated again: a check spanning sections (timeouts, routes against the login app's
    # prefix) must hold for the mix too; ConfigError refuses the reload as a bad file would.
    return parse_config(raw)


def reload_config(
    current: GatewayConfig, load: Callable[[], GatewayConfig]
) -> GatewayConfig | None:
    """:func:`reloaded` from the file ``load`` reads; None (logged) when it is refused."""
    try:
        return reloaded(current, load())
    except ConfigError as exc:
        logger.error("reload refused; keeping the running configuration", extra={"why": str(exc)})
        return None


def reference_text() -> str:
    """The reload rule in Markdown, for the configuration reference."""
    lines = [
        "**Reload (SIGHUP)**: both servers re-read the file and apply every section except "
        "these, which keep their running value until both are restarted (a warning names "
        "each changed key); an invalid file is refused and the running configuration kept:",
        "",
    ]
    lines += [f"- `{section}`: {why}" for section, why in RESTART_ONLY.items()]
    return "\n".join(lines)
