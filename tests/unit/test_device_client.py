"""The CLI's side of the device login against a scripted server: odd replies end in a
DeviceLoginError, and the login never waits past the code's lifetime."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.device_client import DeviceLoginError, device_login

CREDENTIAL = "gws_" + "a" * 43 + "." + "b" * 43


class _Reply:
    def __init__(self, status_code: int, body: Any) -> None:
        self.status_code = status_code
        self._body = body

    def json(self) -> Any:
        return self._body


class ScriptedServer:
    """Answers /cli/start with ``start`` and each /cli/token poll with the next of ``polls``."""

    def __init__(self, start: Any, polls: list[tuple[int, Any] | Exception]) -> None:
        self._start = start
        self._polls: Iterator[tuple[int, Any] | Exception] = iter(polls)
        self.token_polls = 0

    def post(self, url: str, **_: Any) -> _Reply:
        if url.endswith("/cli/start"):
            return _Reply(200, self._start)
        self.token_polls += 1
        step = next(self._polls)
        if isinstance(step, Exception):
            raise step
        return _Reply(*step)


def start_reply(**changes: Any) -> dict[str, Any]:
    return {
        "device_code": "d",
        "user_code": "BCDF-GHJK",
        "verification_uri": "https://gw.test/auth/cli/approve",
        "expires_in": 600,
        "interval": 5,
        **changes,
    }


def run(server: ScriptedServer, sleeps: list[float] | None = None) -> str:
    return device_login(
        "https://gw.test",
        open_browser=False,
        printer=lambda _: None,
        sleep=(sleeps if sleeps is not None else []).append,
        http=server,  # type: ignore[arg-type]  # duck-typed: only post() is used
    )


def test_a_blip_and_a_5xx_between_pending_polls_do_not_end_the_login() -> None:
    server = ScriptedServer(
        start_reply(),
        [
            requests.ConnectionError("reset"),
            (502, None),
            (400, {"error": "authorization_pending"}),
            (200, {"access_token": CREDENTIAL}),
        ],
    )
    assert run(server) == CREDENTIAL


def test_three_failed_polls_in_a_row_end_the_login_as_unavailable() -> None:
    server = ScriptedServer(start_reply(), [(503, None), requests.Timeout("slow"), (500, None)])
    with pytest.raises(DeviceLoginError) as raised:
        run(server)
    assert raised.value.error == "unavailable" and server.token_polls == 3


def test_an_absurd_interval_sleeps_no_longer_than_the_code_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    server = ScriptedServer(start_reply(interval=10**9), [])
    with pytest.raises(DeviceLoginError) as raised:
        device_login(
            "https://gw.test",
            open_browser=False,
            printer=lambda _: None,
            sleep=sleep,
            http=server,  # type: ignore[arg-type]  # duck-typed: only post() is used
        )
    assert raised.value.error == "expired_token"
    assert sleeps == [600] and server.token_polls == 0


@pytest.mark.parametrize(
    "changes",
    [{"expires_in": float("inf")}, {"interval": float("nan")}, {"expires_in": "soon"}],
    ids=["infinite-lifetime", "nan-interval", "text-lifetime"],
)
def test_a_malformed_start_reply_is_a_bad_reply(changes: dict[str, Any]) -> None:
    with pytest.raises(DeviceLoginError) as raised:
        run(ScriptedServer(start_reply(**changes), []))
    assert raised.value.error == "bad_reply"


@pytest.mark.parametrize("url", ["http://[::1", "https://[gw.test]/"])
def test_a_url_that_does_not_parse_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(DeviceLoginError) as raised:
        device_login(url, open_browser=False, sleep=lambda _: None)
    assert raised.value.error == "insecure_url"
