"""Value types and validators the configuration sections share: durations, URLs,
origins, host:port addresses."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


# Headers that Envoy or HTTP itself own; a route may never inject or strip these.
_RESERVED_HEADERS = frozenset(
    {"host", "cookie", "content-length", "transfer-encoding", "connection", "upgrade", "te"}
)


MIN_SECRET_LENGTH = 32


MAX_DURATION_SECONDS = 10 * 366 * 86400.0


def _parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string such as ``"90s"``, ``"30m"``, ``"12h"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30m'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 90, '90s', '30m', '12h')")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        return value
    if not math.isfinite(seconds) or seconds > MAX_DURATION_SECONDS:
        raise ValueError("a duration must be finite and at most ten years")
    return seconds


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0)]


def _http_url(value: str, *, allow_path: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials in the URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if not allow_path and parts.path not in ("", "/"):
        raise ValueError("must not have a path")
    return value.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (where plain http is acceptable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_of(url: str) -> str:
    """scheme://host[:port] as browsers send it in Origin: lower-case, no default port."""
    parts = urlsplit(url)
    scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_host_port(value: str, *, any_port: bool = False) -> tuple[str, int]:
    """``host:port`` or ``[IPv6]:port`` as (host without brackets, port), for binding or
    connecting; the one parser every address in the config goes through.

    ``any_port`` admits port 0 (a server binds any free port). Raises ValueError: an IPv6
    address must be in brackets, as in URLs (``::1:80`` could be read two ways).
    """
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        try:
            valid_host = bool(sep) and ipaddress.ip_address(host).version == 6
        except ValueError:
            valid_host = False
        if not valid_host:
            raise ValueError("must be host:port, an IPv6 address in brackets ([::1]:port)")
    else:
        host, sep, port = value.rpartition(":")
        if ":" in host:
            raise ValueError("must be host:port; write an IPv6 address in brackets ([::1]:port)")
        if not sep or not host:
            raise ValueError("must be host:port")
    if not (port.isascii() and port.isdigit()) or not (0 if any_port else 1) <= int(port) <= 65535:
        raise ValueError(f"must be host:port with a port from {0 if any_port else 1} to 65535")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """The inverse of :func:`split_host_port`: brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_port(value: str) -> str:
    split_host_port(value)
    return value


def _listen_address(value: str) -> str:
    split_host_port(value, any_port=True)
    return value


# An address to connect to (or serve metrics on), and one a server binds (port 0: any).
HostPort = Annotated[str, AfterValidator(_host_port)]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
