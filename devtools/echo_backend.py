"""A demo backend that answers every request with the request it received, as JSON.

``python -m devtools.echo_backend --port 9000``. It shows what reached the backend: the
injected credential, the identity headers, and that no session cookie came through.
WebSocket upgrades are not handled here.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


class EchoHandler(BaseHTTPRequestHandler):
    server_version = "echo"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle's algorithm and the
    # peer's delayed ACK add ~40 ms to every response.
    disable_nagle_algorithm = True

    def _body(self) -> str:
        """The body, up to 1 MiB. A body not read to its end (chunked, bigger, or of an
        unreadable length) would be parsed as the next request, so the connection closes."""
        declared = self.headers.get("content-length", "0")
        if not declared.isdigit() or "transfer-encoding" in self.headers:
            self.close_connection = True
            return ""
        length = int(declared)
        if length > MAX_BODY:
            self.close_connection = True
        return self.rfile.read(min(length, MAX_BODY)).decode("utf-8", "replace")

    def _answer(self) -> None:
        body = self._body()
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        payload = json.dumps(
            {"method": self.command, "path": self.path, "headers": headers, "body": body},
            indent=2,
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib's name)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), EchoHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"echo backend listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
