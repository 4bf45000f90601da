"""The CLI login's pure rules: user codes, poll pacing, CSRF tokens, sealing for the device."""

from __future__ import annotations

import re

import pytest

from gateway.crypto import RecordCipher
from gateway.errors import SessionInvalid
from login_app.device_codes import (
    POLL_SLACK_SECONDS,
    SLOW_DOWN_SECONDS,
    USER_CODE_ALPHABET,
    PollResult,
    Status,
    client_key,
    csrf_token,
    csrf_token_matches,
    device_id_for,
    device_public_key,
    display_user_code,
    new_device_code,
    new_user_code,
    normalize_user_code,
    open_for_device,
    poll_outcome,
    seal_for_device,
)

SECRET = "unit-test-server-secret-0123456789abcdef"
OTHER_SECRET = "another-server-secret-0123456789abcdef-xyz"
LOOKUP_ID = "a" * 64


def test_user_codes_are_eight_letters_of_the_unambiguous_alphabet():
    codes = {new_user_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert re.fullmatch(f"[{USER_CODE_ALPHABET}]{{8}}", code)


def test_the_alphabet_has_no_vowels_digits_or_look_alikes():
    assert len(set(USER_CODE_ALPHABET)) == 20
    assert not set(USER_CODE_ALPHABET) & set("AEIOUY0123456789")


def test_user_codes_are_shown_with_a_dash_in_the_middle():
    assert display_user_code("BCDFGHJK") == "BCDF-GHJK"


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("BCDF-GHJK", "BCDFGHJK"),
        ("bcdf-ghjk", "BCDFGHJK"),
        ("BcDfGhJk", "BCDFGHJK"),
        (" bcdf ghjk ", "BCDFGHJK"),
        ("BC-DF-GH-JK", "BCDFGHJK"),
        ("BCDF-GHJ", None),  # too short
        ("BCDF-GHJKL", None),  # too long
        ("BCDF-GHJA", None),  # a vowel is never issued
        ("BCDF-GHJ1", None),
        ("BCDF_GHJK", None),
        ("ＢCDF-GHJK", None),  # full-width letter
        ("BCDF-GHJK" + "-" * 40, None),  # oversized input is refused before any work
        ("", None),
        (None, None),
    ],
)
def test_typed_codes_compare_case_insensitively_ignoring_the_dash(typed, normal):
    assert normalize_user_code(typed) == normal


def test_device_codes_are_32_random_bytes_urlsafe():
    code = new_device_code()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", code)
    assert code != new_device_code()


def test_device_id_is_a_hash_of_the_code_never_the_code():
    code = new_device_code()
    assert re.fullmatch(r"[0-9a-f]{64}", device_id_for(code))
    assert device_id_for(code) == device_id_for(code)
    assert code not in device_id_for(code)


@pytest.mark.parametrize(
    ("status", "last_poll", "interval", "now", "expected"),
    [
        (Status.PENDING, 0, 5, 100, (PollResult.AUTHORIZATION_PENDING, 5)),  # first poll
        (Status.PENDING, 95, 5, 100, (PollResult.AUTHORIZATION_PENDING, 5)),
        (Status.PENDING, 96, 5, 100, (PollResult.AUTHORIZATION_PENDING, 5)),  # within slack
        (Status.PENDING, 98, 5, 100, (PollResult.SLOW_DOWN, 5 + SLOW_DOWN_SECONDS)),
        (Status.PENDING, 99.9, 10, 100, (PollResult.SLOW_DOWN, 15)),  # each slow_down adds 5
        (Status.PENDING, 92, 10, 100, (PollResult.SLOW_DOWN, 15)),  # the raised interval holds
        (Status.PENDING, 90, 10, 100, (PollResult.AUTHORIZATION_PENDING, 10)),
        (Status.APPROVED, 99.9, 5, 100, (PollResult.APPROVED, 5)),  # a token is never held back
        (Status.DENIED, 99.9, 5, 100, (PollResult.ACCESS_DENIED, 5)),
        (Status.PENDING, 0, 5, 600, (PollResult.EXPIRED_TOKEN, 5)),
        (Status.APPROVED, 0, 5, 601, (PollResult.EXPIRED_TOKEN, 5)),
    ],
)
def test_poll_outcome_follows_rfc_8628(status, last_poll, interval, now, expected):
    assert (
        poll_outcome(status, last_poll=last_poll, interval=interval, expires_at=600, now=now)
        == expected
    )


def test_the_poll_slack_stays_below_the_smallest_interval():
    assert 0 < POLL_SLACK_SECONDS < 5


def test_csrf_token_is_an_hmac_of_session_and_code():
    token = csrf_token(SECRET, LOOKUP_ID, "BCDFGHJK")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert token == csrf_token(SECRET, LOOKUP_ID, "BCDFGHJK")
    assert token != csrf_token(SECRET, "b" * 64, "BCDFGHJK")
    assert token != csrf_token(SECRET, LOOKUP_ID, "BCDFGHJL")
    assert token != csrf_token(OTHER_SECRET, LOOKUP_ID, "BCDFGHJK")


def test_csrf_token_matches_with_any_configured_secret():
    old = csrf_token(OTHER_SECRET, LOOKUP_ID, "BCDFGHJK")
    assert csrf_token_matches((SECRET, OTHER_SECRET), LOOKUP_ID, "BCDFGHJK", old)
    assert not csrf_token_matches((SECRET,), LOOKUP_ID, "BCDFGHJK", old)


@pytest.mark.parametrize("presented", [None, "", "x", "é" * 43, "A" * 500])
def test_csrf_token_refuses_junk_without_raising(presented):
    assert not csrf_token_matches((SECRET,), LOOKUP_ID, "BCDFGHJK", presented)


def test_client_key_combines_the_peer_and_envoys_external_address():
    assert client_key("10.0.0.1", "203.0.113.5") != client_key("10.0.0.1", "203.0.113.6")
    assert client_key("10.0.0.1", None) != client_key("10.0.0.2", None)
    assert client_key("10.0.0.1", None) == client_key("10.0.0.1", "")
    assert len(client_key("10.0.0.1", "x" * 10_000)) == 32


def test_only_the_device_code_opens_what_approval_sealed_for_it():
    cipher = RecordCipher((SECRET,))
    code = new_device_code()
    sealed = seal_for_device(
        cipher, device_public_key(code), b"gws_credential", associated=b"gw:device:{x}"
    )
    assert b"gws_" not in sealed
    assert open_for_device(cipher, code, sealed, associated=b"gw:device:{x}") == b"gws_credential"
    with pytest.raises(SessionInvalid):
        open_for_device(cipher, new_device_code(), sealed, associated=b"gw:device:{x}")
    with pytest.raises(SessionInvalid):
        open_for_device(cipher, code, sealed, associated=b"gw:device:{y}")
    with pytest.raises(SessionInvalid):
        open_for_device(RecordCipher((OTHER_SECRET,)), code, sealed, associated=b"gw:device:{x}")
