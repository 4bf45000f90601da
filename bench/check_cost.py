"""CPU per Check in our own code, without gRPC, sockets or Redis: `python -m bench.check_cost`.

Drives the gRPC servicer's ``Check`` directly with a cached session, so what is timed is the
decision core, the protobuf translation both ways, metrics and the decision log; the
difference to ``make bench``'s f rows is what grpcio itself costs per call.
"""

from __future__ import annotations

import asyncio
import logging
import time

from envoy.service.auth.v3 import external_auth_pb2

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Decider
from ext_authz.grpc_service import AuthorizationService
from gateway.config import parse_config
from gateway.contract import ROUTE_KEY
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session, TokenSet

CHECKS = 20_000


class _Cached:
    def __init__(self, session: Session) -> None:
        self._session = session

    async def load(self, credential: SessionCredential) -> Session:
        return self._session

    def evict(self, credential: SessionCredential) -> None:
        pass


def main() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    config = parse_config(
        {
            "public_url": "http://127.0.0.1:8080",
            "session": {},
            "providers": [{"id": "primary", "kind": "oidc", "issuer": "http://127.0.0.1:9",
                           "client_id": "gw"}],
            "routes": [{"name": "api", "prefix": "/api/", "upstream": "http://127.0.0.1:9",
                        "provider": "primary", "identity_headers": True}],
        },
        {"GATEWAY_SECRET_KEYS": "x" * 40},
    )  # fmt: skip
    now = int(time.time())
    session = Session(
        Identity("alice", "alice@example.org", "Alice Ärger"), now, now + 3600,
        {"primary": TokenSet("t" * 900, expires_at=now + 3600)},
    )  # fmt: skip
    credential = SessionCredential.generate()
    service = AuthorizationService(Authorizer(Decider(config), _Cached(session)))
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/api/projects"
    http.headers["cookie"] = f"{config.cookie_name}={credential.encode()}; theme=dark"
    http.headers["x-request-id"] = "bench"
    request.attributes.context_extensions[ROUTE_KEY] = "api"

    async def run() -> float:
        for _ in range(1000):  # warm caches
            await service.Check(request, None)  # type: ignore[arg-type]
        started = time.process_time()
        for _ in range(CHECKS):
            await service.Check(request, None)  # type: ignore[arg-type]
        return (time.process_time() - started) / CHECKS

    best = min(asyncio.run(run()) for _ in range(3))
    print(f"{best * 1e6:.1f} µs of CPU per Check in the gateway's own code (best of 3)")


if __name__ == "__main__":
    main()
