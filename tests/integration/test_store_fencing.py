"""Stored refresh results are fenced: a late writer never overwrites a newer token set."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from gateway.config import parse_config
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import async_store, sync_store
from gateway.sessions.model import Identity, Session, TokenSet
from tests.support.servers import base_config, gateway_env

pytestmark = pytest.mark.integration


def test_a_refresh_started_from_a_superseded_refresh_token_keeps_the_newer_tokens(redis_server):
    config = parse_config(
        base_config(redis_url=redis_server.url, backend_url="http://127.0.0.1:9"), gateway_env()
    )
    now = int(time.time())
    newer = TokenSet("access-2", refresh_token="refresh-2", expires_at=now + 300)
    credential = SessionCredential.generate()
    sync_store(config).save(
        credential, Session(Identity("alice"), now, now + 3600, {"primary": newer})
    )

    async def late_writer() -> Session | None:
        store = async_store(config)
        try:
            # A holder whose lease ran out, still finishing a refresh made with refresh-1.
            stale = replace(newer, access_token="access-1b", refresh_token="", needs_login=True)
            return await store.replace_tokens(
                credential, "primary", stale, used_refresh_token="refresh-1"
            )
        finally:
            await store.close()

    kept = asyncio.run(late_writer())
    assert kept is not None and kept.tokens["primary"] == newer
    stored = sync_store(config).load(credential)
    assert stored is not None and stored.tokens["primary"] == newer
