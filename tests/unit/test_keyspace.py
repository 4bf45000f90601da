"""Every Redis key and channel name, pinned byte for byte: records written before a release
must still be found after it (a renamed key logs everyone out and strands logins in flight)."""

from __future__ import annotations

import pytest

from gateway.sessions.keyspace import Keyspace

KEYS = Keyspace("gw:")
ALICE = "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"  # sha256("alice")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (KEYS.session_record("ab12"), "gw:s:{ab12}"),
        (KEYS.session_records_pattern(), "gw:s:*"),
        (KEYS.session_records_starting("ab12cd"), "gw:s:{ab12cd*"),
        (KEYS.session_directory("ab12cd34"), "gw:s-dir:{ab12}"),
        (KEYS.refresh_lock("ab12", "primary"), "gw:lock:{ab12}:primary"),
        (KEYS.user_index("alice"), f"gw:user:{{{ALICE}}}"),
        (KEYS.user_index_pattern(), "gw:user:*"),
        (
            KEYS.provider_session_index("idp-sid"),
            "gw:sid:{55f3346a6086fd985b6130ea4b797eb1e95e76e3125e04a88738c06670f19707}",
        ),
        (KEYS.invalidation_channel(), "gw:invalidate"),
        (KEYS.login_attempt("att"), "gw:login:{att}"),
        (
            KEYS.login_state("abc", "abc.def"),
            "gw:login-state:{abc}:ebb3127bf5c7c4b4e42b51710f4946c1c1d05b331d2379dd15e3a5431ed93416",
        ),
        (KEYS.login_rounds("d1", "primary"), "gw:login-rounds:{d1}:primary"),
        (KEYS.device("dev"), "gw:device:{dev}"),
        (KEYS.device_user_code("BCDFGHJK"), "gw:device-user:{BCDFGHJK}"),
        (KEYS.device_counter("start", "10.0.0.9"), "gw:device-start:{10.0.0.9}"),
        (KEYS.own_logout("alice"), f"gw:own-logout:{{{ALICE}}}"),
        (KEYS.logout_token_seen("jti-1"), "gw:logout-jti:jti-1"),
        (KEYS.readiness_probe(), "gw:ready-probe"),
    ],
)
def test_each_key_keeps_the_format_existing_records_were_written_under(
    name: str, expected: str
) -> None:
    assert name == expected


def test_every_name_starts_with_the_configured_prefix() -> None:
    keys = Keyspace("team-a:")
    assert keys.session_record("x") == "team-a:s:{x}"
    assert keys.invalidation_channel() == "team-a:invalidate"
