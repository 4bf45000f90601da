"""A do-nothing ext_authz server: every Check answered OK at once, on the gateway's grpcio.

The floor for (f): what grpc.aio itself costs per Check on this machine, with no decision,
no Redis and no logging. ``python -m bench.noop_authz --listen 127.0.0.1:PORT``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent import futures

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from google.rpc import code_pb2, status_pb2

_ALLOW = auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK), ok_response=auth_pb2.OkHttpResponse()
)


class NoopAuthorization(auth_grpc.AuthorizationServicer):
    async def Check(  # noqa: N802  (the name is gRPC's)
        self, request: auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CheckResponse:
        return _ALLOW


class SyncNoopAuthorization(auth_grpc.AuthorizationServicer):
    def Check(  # noqa: N802  (the name is gRPC's)
        self, request: auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> auth_pb2.CheckResponse:
        return _ALLOW


def serve_sync(listen: str) -> None:
    """The same with grpcio's thread-pool server: the sync-vs-aio measurement of issue 5."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)]
    )
    auth_grpc.add_AuthorizationServicer_to_server(SyncNoopAuthorization(), server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()
    server.stop(1.0)


async def serve(listen: str) -> None:
    """Serve until SIGTERM or SIGINT; same server options as the gateway's ext_authz."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    auth_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--sync", action="store_true", help="grpc.server with a thread pool")
    args = parser.parse_args(argv)
    if args.sync:
        serve_sync(args.listen)
    else:
        asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
