"""The session record (protobuf, sealed) and the lifetime rules that set its Redis TTL."""

from __future__ import annotations

import base64
import zlib

import pytest

from gateway.config import SessionSettings
from gateway.crypto import RecordCipher
from gateway.errors import SessionInvalid
from gateway.proto import gateway_session_pb2 as pb
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.keyspace import Keyspace
from gateway.sessions.model import SCHEMA_VERSION, Identity, Session, SessionCodec, TokenSet
from gateway.sessions.store import new_session, new_session_times, touch_ttl_ms, ttl_ms_for

NOW = 1_700_000_000
IDLE_S = 1800
IDLE_MS = IDLE_S * 1000
ABSOLUTE_S = 3600


@pytest.fixture
def settings() -> SessionSettings:
    return SessionSettings(
        absolute_lifetime=ABSOLUTE_S, idle_timeout=IDLE_S, secret_keys=("k" * 40,)
    )


@pytest.fixture
def codec() -> SessionCodec:
    return SessionCodec(RecordCipher(["server-secret-" + "s" * 32]), Keyspace("gw:"))


@pytest.fixture
def credential() -> SessionCredential:
    return SessionCredential.generate()


def a_session(expires_at: int = NOW + ABSOLUTE_S) -> Session:
    return Session(
        identity=Identity(
            subject="user-42",
            email="ada@example.com",
            name="Ada Lovelace — 山田",
            groups=("admins", "staff"),
            provider_session_id="sid-1",
        ),
        created_at=NOW,
        expires_at=expires_at,
        tokens={
            "primary": TokenSet(
                access_token="primary-access",
                refresh_token="primary-refresh",
                id_token="eyJ.id.token",
                token_type="Bearer",
                scope="openid email",
                expires_at=NOW + 300,
            ),
            "gitlab": TokenSet(access_token="glpat-123", needs_login=False),
            "jupyter": TokenSet(access_token="stale", needs_login=True),
        },
    )


# ---- the codec -----------------------------------------------------------------------------


def test_a_session_with_several_providers_round_trips(
    codec: SessionCodec, credential: SessionCredential
) -> None:
    session = a_session()
    assert codec.decode(credential, codec.encode(credential, session)) == session


def test_the_sealed_record_shows_no_token_or_identity(
    codec: SessionCodec, credential: SessionCredential
) -> None:
    sealed = codec.encode(credential, a_session())
    for secret in (b"primary-access", b"primary-refresh", b"glpat-123", b"ada@example.com"):
        assert secret not in sealed


def test_a_record_does_not_open_for_another_credential(
    codec: SessionCodec, credential: SessionCredential
) -> None:
    sealed = codec.encode(credential, a_session())
    with pytest.raises(SessionInvalid):
        codec.decode(SessionCredential.generate(), sealed)


def test_a_record_does_not_open_for_a_credential_with_the_same_id_but_another_secret(
    codec: SessionCodec, credential: SessionCredential
) -> None:
    # Same Redis key, so only the per-session secret stands between a Redis dump and tokens.
    sealed = codec.encode(credential, a_session())
    forged = SessionCredential(credential.session_id, bytes(32))
    assert codec.record_key(forged) == codec.record_key(credential)
    with pytest.raises(SessionInvalid):
        codec.decode(forged, sealed)


def test_the_record_key_names_the_hashed_id_in_a_cluster_hash_tag(
    codec: SessionCodec, credential: SessionCredential
) -> None:
    key = codec.record_key(credential)
    assert key == f"gw:s:{{{credential.lookup_id}}}"
    encoded_id = base64.urlsafe_b64encode(credential.session_id).rstrip(b"=").decode()
    assert encoded_id not in key


def _seal_plaintext(codec: SessionCodec, credential: SessionCredential, plaintext: bytes) -> bytes:
    """A record that authenticates but carries the given bytes (as a buggy writer might),
    marked as uncompressed unless ``raw`` bytes already carry an encoding marker."""
    return _seal_raw(codec, credential, b"\x00" + plaintext)


def _seal_raw(codec: SessionCodec, credential: SessionCredential, plaintext: bytes) -> bytes:
    cipher = codec._cipher  # the codec owns its cipher; the test needs the same one
    return cipher.seal(
        plaintext,
        session_secret=credential.secret,
        associated=codec.record_key(credential).encode("ascii"),
    )


def _message(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "version": SCHEMA_VERSION,
        "identity": pb.Identity(subject="user-42"),
        "created_at": NOW,
        "expires_at": NOW + 60,
    }
    fields.update(overrides)
    return pb.Session(**fields).SerializeToString()  # type: ignore[arg-type]


def test_a_well_formed_minimal_record_opens(
    codec: SessionCodec, credential: SessionCredential
) -> None:
    session = codec.decode(credential, _seal_plaintext(codec, credential, _message()))
    assert session.identity.subject == "user-42"
    assert session.tokens == {}


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(_message(version=SCHEMA_VERSION + 1), id="newer-schema-version"),
        pytest.param(_message(version=0), id="schema-version-zero"),
        pytest.param(_message(identity=pb.Identity(subject="")), id="missing-subject"),
        pytest.param(_message(expires_at=0), id="missing-expiry"),
        pytest.param(_message(expires_at=-5), id="negative-expiry"),
        pytest.param(b"", id="empty-plaintext"),
        pytest.param(b"\xff\xff\xff\xff", id="garbage-plaintext"),
        pytest.param(b"\x12\x05\x0a\x03\xff\xfe\xfd", id="invalid-utf8-in-subject"),
        pytest.param(b'{"subject": "user-42"}', id="json-instead-of-protobuf"),
    ],
)
def test_a_record_that_authenticates_but_is_not_a_usable_session_is_invalid(
    codec: SessionCodec, credential: SessionCredential, plaintext: bytes
) -> None:
    with pytest.raises(SessionInvalid):
        codec.decode(credential, _seal_plaintext(codec, credential, plaintext))


# ---- tokens and expiry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "expired"),
    [
        pytest.param(TokenSet("t", expires_at=0), False, id="no-known-expiry"),
        pytest.param(TokenSet("t", expires_at=NOW + 1), False, id="one-second-left"),
        pytest.param(TokenSet("t", expires_at=NOW), True, id="expiring-now"),
        pytest.param(TokenSet("t", expires_at=NOW - 1), True, id="past"),
    ],
)
def test_a_token_expires_at_its_expiry_second_unless_none_is_known(
    token: TokenSet, expired: bool
) -> None:
    assert token.expired_at(NOW) is expired


@pytest.mark.parametrize(
    ("access_token", "presentable"),
    [
        pytest.param("eyJhbGciOi.J9-_~+/=", True, id="b64token"),
        pytest.param("a" * 8192, True, id="longest"),
        pytest.param("a" * 8193, False, id="too-long"),
        pytest.param("", False, id="empty"),
        pytest.param("abc\r\nx: y", False, id="crlf"),
        pytest.param("abc def", False, id="space"),
        pytest.param("abc\x00", False, id="nul"),
        pytest.param("tökén", False, id="non-ascii"),
    ],
)
def test_only_tokens_that_can_travel_in_a_header_are_presentable(
    access_token: str, presentable: bool
) -> None:
    assert TokenSet(access_token).presentable is presentable


def test_a_session_is_expired_from_its_expiry_second_on() -> None:
    session = a_session(expires_at=NOW + 10)
    assert not session.expired_at(NOW + 9.999)
    assert session.expired_at(NOW + 10)


def test_with_tokens_adds_a_provider_without_changing_the_original() -> None:
    session = a_session()
    updated = session.with_tokens("new", TokenSet("n"))
    assert updated.tokens["new"] == TokenSet("n")
    assert "new" not in session.tokens
    assert updated.tokens["primary"] == session.tokens["primary"]


# ---- Redis TTLs ----------------------------------------------------------------------------


def test_a_new_session_ends_one_absolute_lifetime_from_now(settings: SessionSettings) -> None:
    assert new_session_times(settings, NOW + 0.7) == (NOW, NOW + ABSOLUTE_S)


def test_a_session_that_only_adds_providers_never_outlives_the_one_it_extends(
    settings: SessionSettings,
) -> None:
    identity = Identity("alice")
    fresh = new_session(settings, identity, {}, NOW)
    assert (fresh.created_at, fresh.expires_at) == (NOW, NOW + ABSOLUTE_S)
    assert new_session(settings, identity, {}, NOW, not_after=NOW + 60).expires_at == NOW + 60
    assert new_session(settings, identity, {}, NOW, lifetime=5).expires_at == NOW + 5


@pytest.mark.parametrize(
    ("seconds_left", "expected_ms"),
    [
        pytest.param(ABSOLUTE_S, IDLE_MS, id="fresh-session-gets-the-idle-timeout"),
        pytest.param(IDLE_S + 1, IDLE_MS, id="just-over-idle-left"),
        pytest.param(IDLE_S, IDLE_MS, id="exactly-idle-left"),
        pytest.param(600, 600_000, id="absolute-expiry-closer-than-idle"),
        pytest.param(0.5, 500, id="half-a-second-left"),
        pytest.param(0, 1, id="expiring-now-still-at-least-1ms"),
        pytest.param(-100, 1, id="already-expired-still-at-least-1ms"),
    ],
)
def test_ttl_is_the_smaller_of_idle_timeout_and_time_left(
    settings: SessionSettings, seconds_left: float, expected_ms: int
) -> None:
    session = a_session(expires_at=NOW + ABSOLUTE_S)
    now = session.expires_at - seconds_left
    assert ttl_ms_for(session, settings, now) == expected_ms


def test_ttl_never_exceeds_idle_timeout_nor_the_absolute_remaining_time(
    settings: SessionSettings,
) -> None:
    session = a_session(expires_at=NOW + ABSOLUTE_S)
    for offset in range(0, ABSOLUTE_S + 1, 7):
        now = NOW + offset + 0.25
        ttl = ttl_ms_for(session, settings, now)
        assert 1 <= ttl <= IDLE_MS
        assert ttl <= max(1, (session.expires_at - now) * 1000)


@pytest.mark.parametrize(
    ("remaining_ttl_ms", "expected"),
    [
        pytest.param(IDLE_MS, None, id="just-written"),
        pytest.param(IDLE_MS - 1000, None, id="used-a-second-ago"),
        pytest.param(IDLE_MS * 9 // 10 + 1, None, id="just-under-a-tenth-unused"),
        pytest.param(IDLE_MS * 9 // 10, IDLE_MS, id="a-tenth-unused-slides"),
        pytest.param(IDLE_MS // 2, IDLE_MS, id="half-unused-slides"),
        pytest.param(1, IDLE_MS, id="about-to-vanish-slides"),
        pytest.param(-1, IDLE_MS, id="record-without-a-ttl-gets-one"),
    ],
)
def test_touch_slides_the_idle_window_only_after_a_tenth_of_it_passed(
    settings: SessionSettings, remaining_ttl_ms: int, expected: int | None
) -> None:
    session = a_session(expires_at=NOW + ABSOLUTE_S)
    assert touch_ttl_ms(session, settings, NOW, remaining_ttl_ms) == expected


@pytest.mark.parametrize(
    ("seconds_left", "remaining_ttl_ms", "expected"),
    [
        pytest.param(1000, IDLE_MS // 2, 1_000_000, id="slides-only-up-to-absolute-expiry"),
        pytest.param(600, 600_000, None, id="already-at-absolute-expiry-no-write"),
        pytest.param(600, 300_000, 600_000, id="slides-to-absolute-expiry"),
        pytest.param(0, 50, None, id="expired-never-extended"),
    ],
)
def test_touch_never_extends_beyond_absolute_expiry(
    settings: SessionSettings, seconds_left: int, remaining_ttl_ms: int, expected: int | None
) -> None:
    session = a_session(expires_at=NOW + seconds_left)
    new_ttl = touch_ttl_ms(session, settings, NOW, remaining_ttl_ms)
    assert new_ttl == expected
    if new_ttl is not None:
        assert new_ttl <= seconds_left * 1000


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(b"\x07" + _message(), id="unknown-encoding-marker"),
        pytest.param(b"\x01" + b"not deflate at all", id="garbage-deflate"),
        pytest.param(b"\x01" + zlib.compress(_message())[:-4], id="truncated-deflate"),
        pytest.param(b"\x01" + zlib.compress(b"\x00" * (1 << 20)), id="deflate-bomb"),
        pytest.param(b"", id="no-marker"),
    ],
)
def test_a_record_whose_encoding_is_broken_is_refused(
    codec: SessionCodec, credential: SessionCredential, plaintext: bytes
) -> None:
    with pytest.raises(SessionInvalid):
        codec.decode(credential, _seal_raw(codec, credential, plaintext))


def test_records_are_compressed_when_that_saves_space(
    codec: SessionCodec, credential: SessionCredential
) -> None:
    jwt_like = "eyJhbGciOiJSUzI1NiJ9." + "eyJzdWIiOiJ1c2VyLTQyIiwiYXVkIjoiZ2F0ZXdheSJ9" * 20
    session = Session(Identity("user-42"), 1, 2_000_000_000, {"p": TokenSet(jwt_like)})
    sealed = codec.encode(credential, session)
    assert len(sealed) < len(jwt_like)
    assert codec.decode(credential, sealed) == session
