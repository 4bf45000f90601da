"""The Redis persistence the gateway's refresh guarantee needs, written down once.

Providers rotate refresh tokens: once a refresh's new tokens are acknowledged by Redis the old
refresh token is dead at the provider, so a Redis that restarts without that write brings the
session back with a retired token, and the next refresh gets ``invalid_grant`` (a new login).
So every acknowledged write must survive a crash: an append-only file fsynced on every write
(``appendfsync always``; ``everysec`` may lose the last second of them). Refreshes are rare
(one per session and token lifetime), so the fsyncs are affordable. The save points add
snapshots for backups and faster restarts; each is its own ``--save SECONDS CHANGES`` (Redis
6.2 reads ``--save "60 1"``, one argument, as no save points at all).

``make run`` (devtools.stack_plan), the test servers that restart Redis
(tests.support.servers.RedisServer with ``persistence=True``) and the shipped Kubernetes
manifest use these arguments; tests/integration/test_deploy_manifests.py holds the manifest
to them.
"""

from __future__ import annotations

REDIS_PERSISTENCE_ARGS: tuple[str, ...] = (
    *("--appendonly", "yes"),
    *("--appendfsync", "always"),
    *("--save", "3600", "1"),
    *("--save", "300", "100"),
    *("--save", "60", "10000"),
)
