"""Damaged entries in the session indexes Redis keeps: skipped, pruned, never fatal."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.config import GatewayConfig, parse_config
from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, session_admin, sync_store
from gateway.sessions.model import Identity, Session
from tests.support.servers import RedisServer, base_config, gateway_env

pytestmark = pytest.mark.integration

DAMAGED_ENTRIES: dict[bytes, bytes] = {
    b"not-json": b"{",
    b"a-list": b"[1, 2]",
    b"no-subject": json.dumps({"created_at": 1, "expires_at": 2}).encode(),
    b"infinite-time": b'{"subject": "erin", "created_at": 1e999, "expires_at": 1e999}',
    b"beyond-the-calendar": json.dumps(
        {"subject": "erin", "created_at": 10**20, "expires_at": 10**20}
    ).encode(),
    b"time-as-text": json.dumps({"subject": "erin", "created_at": "1", "expires_at": "2"}).encode(),
    b"providers-not-text": json.dumps(
        {"subject": "erin", "created_at": 1, "expires_at": 4102444800, "providers": [1]}
    ).encode(),
    b"deeply-nested": b"[" * 100_000,
}
# A well-formed entry under a name that is not UTF-8: listed (as ended, no record has that
# name) and kept until it expires, like any entry, but never a crash.
ODD_NAME = b"\xff\xfe-not-utf8"
ODD_ENTRY = json.dumps({"subject": "erin", "created_at": 1, "expires_at": 4102444800}).encode()


@pytest.fixture
def config(redis_server: RedisServer) -> GatewayConfig:
    raw = base_config(redis_url=redis_server.url, backend_url="http://127.0.0.1:9")
    raw["redis"]["key_prefix"] = f"t{secrets.token_hex(6)}:"  # every test its own keys
    return parse_config(raw, gateway_env())


def save_session(config: GatewayConfig, user: str) -> SessionCredential:
    now = int(time.time())
    credential = SessionCredential.generate()
    sync_store(config).save(credential, Session(Identity(user), now, now + 3600))
    return credential


def damage_index(config: GatewayConfig, user: str) -> str:
    index = keyspace(config).user_index(user)
    entries = {**DAMAGED_ENTRIES, ODD_NAME: ODD_ENTRY}
    sync_client(config.redis).hset(index, mapping=entries)  # type: ignore[arg-type]
    return index


def test_operators_list_the_good_sessions_of_an_index_with_damaged_entries(
    config: GatewayConfig,
) -> None:
    good = save_session(config, "erin")
    damage_index(config, "erin")
    for listed in (
        session_admin(config).list_sessions("erin"),
        session_admin(config).list_sessions(),
    ):
        states = {summary.lookup_id: summary.active for summary in listed}
        assert states == {ODD_NAME.decode("utf-8", "replace"): False, good.lookup_id: True}


def test_the_sessions_command_lists_and_revokes_despite_damaged_entries(
    config: GatewayConfig, tmp_path: Path
) -> None:
    good = save_session(config, "erin")
    damage_index(config, "erin")
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args, "--config", str(config_path)],
            capture_output=True, text=True, env=gateway_env(), timeout=30, check=False,
        )  # fmt: skip

    for listing in (["sessions", "list"], ["sessions", "list", "--json"]):
        listed = gateway(*listing)
        assert listed.returncode == 0, listed.stderr
        assert good.lookup_id[:16] in listed.stdout
    revoked = gateway("sessions", "revoke", "--user", "erin")
    assert revoked.returncode == 0, revoked.stderr
    assert sync_store(config).load(good) is None


def test_the_next_save_prunes_damaged_entries_from_the_index(config: GatewayConfig) -> None:
    index = damage_index(config, "erin")
    good = save_session(config, "erin")
    assert set(sync_client(config.redis).hkeys(index)) == {good.lookup_id.encode(), ODD_NAME}


def expired_entries(count: int) -> dict[str, str]:
    entry = json.dumps({"subject": "erin", "created_at": 1, "expires_at": 2})
    return {secrets.token_hex(32): entry for _ in range(count)}


def test_logins_prune_an_index_full_of_expired_entries_a_sample_at_a_time(
    config: GatewayConfig,
) -> None:
    """Each save looks at a bounded sample (it never re-reads the whole index), yet the
    expired entries go far faster than saves add new ones."""
    client = sync_client(config.redis)
    index = keyspace(config).user_index("erin")
    client.hset(index, mapping=expired_entries(400))  # type: ignore[arg-type]
    saved = [save_session(config, "erin").lookup_id for _ in range(100)]
    remaining = {reply.decode() for reply in client.hkeys(index)}
    assert set(saved) <= remaining  # live sessions are never pruned
    # 100 saves sample 1,600 entries: of 400 expired ones, a few at most are left.
    assert len(remaining - set(saved)) < 100


def test_operators_revoke_one_session_by_its_listed_prefix(config: GatewayConfig) -> None:
    kept, ended = save_session(config, "erin"), save_session(config, "erin")
    admin = session_admin(config)
    revoked = admin.revoke_session(ended.lookup_id[:16].upper())
    assert revoked is not None and revoked.lookup_id == ended.lookup_id
    assert revoked.subject == "erin" and revoked.active
    assert sync_store(config).load(ended) is None and sync_store(config).load(kept) is not None
    assert sync_store(config).lookup_ids_of_user("erin") == [kept.lookup_id]
    assert admin.revoke_session(ended.lookup_id[:16]) is None  # gone from the directory too
    assert admin.revoke_session("not-hex-" + "x" * 8) is None


def test_a_session_saved_before_the_directory_existed_is_still_revoked_by_prefix(
    config: GatewayConfig,
) -> None:
    old = save_session(config, "erin")
    client = sync_client(config.redis)
    client.hdel(keyspace(config).session_directory(old.lookup_id), old.lookup_id)
    revoked = session_admin(config).revoke_session(old.lookup_id[:12])
    assert revoked is not None and revoked.subject == "erin"
    assert sync_store(config).load(old) is None


def test_a_damaged_directory_bucket_stops_neither_a_login_nor_a_revoke(
    config: GatewayConfig,
) -> None:
    credential = SessionCredential.generate()
    client = sync_client(config.redis)
    bucket = keyspace(config).session_directory(credential.lookup_id)
    client.rpush(bucket, "not a hash")
    now = int(time.time())
    sync_store(config).save(credential, Session(Identity("erin"), now, now + 3600))
    assert client.type(bucket) == b"hash"
    client.delete(bucket)
    client.rpush(bucket, "not a hash")
    # Not in the (damaged) directory: found by its record, as a session from before it.
    revoked = session_admin(config).revoke_session(credential.lookup_id[:16])
    assert revoked is not None and sync_store(config).load(credential) is None


def test_an_index_lives_as_long_as_its_longest_lived_session_and_no_longer(
    config: GatewayConfig,
) -> None:
    client = sync_client(config.redis)
    store, now = sync_store(config), int(time.time())
    short = SessionCredential.generate()
    store.save(short, Session(Identity("erin"), now, now + 60))
    index = keyspace(config).user_index("erin")
    assert 0 < client.pttl(index) <= 60_000
    assert 0 < client.pttl(keyspace(config).session_directory(short.lookup_id)) <= 60_000
    long_lived = save_session(config, "erin")  # an hour
    assert client.pttl(index) > 3_000_000
    store.save(short, Session(Identity("erin"), now, now + 60))  # a later, shorter write ...
    assert client.pttl(index) > 3_000_000  # ... never cuts the longer session's entry short
    assert long_lived.lookup_id in store.lookup_ids_of_user("erin")
