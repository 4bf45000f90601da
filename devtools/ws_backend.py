"""A demo WebSocket backend: tells each client what its upgrade request carried, then echoes.

``python -m devtools.ws_backend --port 9001``. On connect it sends one JSON text message,
``{"path": ..., "headers": {name: [values]}}``, with the handshake request as it arrived (so
a test sees the injected credential and that no session cookie came through); after that
every message comes back unchanged, text as text and binary as binary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def handshake_report(connection: ServerConnection) -> str:
    """The upgrade request's path and headers (names lower-cased, repeats kept) as JSON."""
    assert connection.request is not None  # set once the handshake has completed
    headers: dict[str, list[str]] = {}
    for name, value in connection.request.headers.raw_items():
        headers.setdefault(name.lower(), []).append(value)
    return json.dumps({"path": connection.request.path, "headers": headers})


async def echo(connection: ServerConnection) -> None:
    try:
        await connection.send(handshake_report(connection))
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass  # the client going away mid-send is the normal end


async def run(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(echo, host, port) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"ws backend listening on ws://{host}:{bound}", flush=True)
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args(argv)
    asyncio.run(run(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
