"""Identity-provider replies without a provider: every HTTP request the ``requests`` library
makes is answered from a table and recorded (the seam ProviderClient's sessions share)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests


@dataclass
class Exchange:
    """Replies by URL (query left off), and every request made."""

    replies: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[requests.PreparedRequest] = field(default_factory=list)

    def form(self, index: int = -1) -> dict[str, str]:
        body = self.requests[index].body or ""
        text = body.decode() if isinstance(body, bytes) else body
        return {key: values[0] for key, values in parse_qs(text).items()}

    def basic_credentials(self, index: int = -1) -> tuple[str, str] | None:
        header = self.requests[index].headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password


def record_exchange(monkeypatch: pytest.MonkeyPatch) -> Exchange:
    """Answer every request by URL (query left off) from ``Exchange.replies``."""
    recorded = Exchange()

    def send(_adapter: object, request: requests.PreparedRequest, **_: Any) -> Any:
        recorded.requests.append(request)
        status, body = recorded.replies[str(request.url).partition("?")[0]]
        reply = requests.Response()
        reply.status_code = status
        reply.headers["Content-Type"] = "application/json"
        reply._content = json.dumps(body).encode()
        reply.url, reply.request = str(request.url), request
        return reply

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return recorded
