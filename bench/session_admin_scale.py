"""``python -m bench.session_admin_scale``: what a login and an operator's revoke cost as
sessions pile up.

Starts its own redis-server, writes ``--sessions`` sessions (``--one-user`` of them of one
user, the rest of one user each) the way the blocking store lays them out, then times:

- a login of a new user and of the user with many sessions (``SessionStore.save`` of a new
  session), and
- ``gateway sessions revoke --session <16 hex digits>`` (``SessionAdmin.revoke_session``).

Prints the median and the slowest of each. Works against older trees as well (it only
writes the directory where the keyspace has one), so before and after can be compared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import redis

from devtools.processes import ManagedProcess, find_binary, free_port, port_open
from gateway.config import parse_config
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace, session_admin, session_codec, sync_store
from gateway.sessions.model import Identity, Session

SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"


def _fill(client: redis.Redis, config_raw: dict, sessions: int, one_user: int) -> list[str]:
    """Write the sessions in pipelines; returns their lookup ids."""
    config = parse_config(config_raw, {"GATEWAY_SECRET_KEYS": SECRET})
    codec, keys = session_codec(config), keyspace(config)
    directory = getattr(keys, "session_directory", None)
    now = int(time.time())
    lookup_ids = []
    pipe = client.pipeline(transaction=False)
    for n in range(sessions):
        subject = "heavy-user" if n < one_user else f"user-{n}"
        credential = SessionCredential.generate()
        session = Session(Identity(subject), now, now + 3600)
        entry = (
            f'{{"subject":"{subject}","created_at":{now},"expires_at":{now + 3600},"providers":[]}}'
        )
        pipe.set(codec.record_key(credential), codec.encode(credential, session), px=3_600_000)
        pipe.hset(keys.user_index(subject), credential.lookup_id, entry)
        if directory is not None:
            pipe.hset(directory(credential.lookup_id), credential.lookup_id, entry)
        lookup_ids.append(credential.lookup_id)
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return lookup_ids


def _times(action: Callable[[int], object], runs: int) -> list[float]:
    spent = []
    for n in range(runs):
        started = time.perf_counter()
        action(n)
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def _report(name: str, spent: list[float]) -> None:
    print(f"{name:<48} median {statistics.median(spent):8.2f} ms   max {max(spent):8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40_000)
    parser.add_argument("--one-user", type=int, default=3_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = ManagedProcess(
            "redis-server",
            [find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", directory],
        )  # fmt: skip
        server.start(lambda: port_open(port))
        try:
            raw = {
                "public_url": "http://127.0.0.1:1",
                # Long enough for the old whole-index reads to finish rather than time out.
                "redis": {"url": f"redis://127.0.0.1:{port}/0", "timeout": "20s"},
                "ext_authz": {"timeout": "30s"},
                "routes": [
                    {
                        "name": "all",
                        "prefix": "/api/",
                        "public": True,
                        "upstream": "http://127.0.0.1:9",
                    }
                ],
            }
            client = redis.Redis(port=port)
            lookup_ids = _fill(client, raw, args.sessions, args.one_user)
            config = parse_config(raw, {"GATEWAY_SECRET_KEYS": SECRET})
            store, admin = sync_store(config), session_admin(config)
            print(f"{args.sessions} sessions, {args.one_user} of one user, redis on {port}")
            now = int(time.time())
            _report(
                "login of a user with no other session",
                _times(
                    lambda n: store.save(
                        SessionCredential.generate(),
                        Session(Identity(f"new-user-{n}"), now, now + 3600),
                    ),
                    args.runs,
                ),
            )
            _report(
                f"login of the user with {args.one_user} sessions",
                _times(
                    lambda _: store.save(
                        SessionCredential.generate(),
                        Session(Identity("heavy-user"), now, now + 3600),
                    ),
                    args.runs,
                ),
            )
            _report(
                f"sessions revoke --session at {args.sessions} sessions",
                _times(lambda n: admin.revoke_session(lookup_ids[-1 - n][:16]), min(args.runs, 5)),
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
