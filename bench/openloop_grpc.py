"""Open-loop gRPC calls over HTTP/2 cleartext, paced and timed like ``bench.openloop``.

A minimal HTTP/2 client for one fixed unary call, because grpcio's own client costs more CPU
per call than the servers under test, on the same CPUs. The request's header block is HPACK
encoded once, without the dynamic table, so every stream sends the same bytes. Answers are
judged by their framing, as the throughput runs judge h2load's: a gRPC message of exactly the
expected size followed by trailers is a good answer (status 200 in the report); a
trailers-only answer (how gRPC reports an error), a message of another size or a reset
stream is a bad one (status 0), which fails the scenario. The server's headers are not
decoded: the pre-check has already seen, through a real gRPC client, the status and headers
that this exact request gets.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any

from bench.openloop import Pacer, run_paced

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM = ACK = 0x1
END_HEADERS, PADDED = 0x4, 0x8
DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
# Settings we send: no server push; stream windows as large as allowed (never a WINDOW_UPDATE).
_SETTINGS = bytes.fromhex("0002 00000000 0004 7fffffff")


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    header = len(payload).to_bytes(3, "big") + bytes((kind, flags))
    return header + stream.to_bytes(4, "big") + payload


def _integer(value: int, prefix_bits: int, first_byte: int = 0) -> bytes:
    """RFC 7541 5.1 integer with an N-bit prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte | value,))
    out, value = bytearray((first_byte | limit,)), value - limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes((value,)))


def _string(text: str) -> bytes:
    raw = text.encode("ascii")
    return _integer(len(raw), 7) + raw  # no Huffman coding


def request_header_block(authority: str, path: str) -> bytes:
    """POST ``path`` as gRPC: static-table entries and literals that are never indexed."""
    block = b"\x83\x86"  # :method POST, :scheme http (static table 3 and 6)
    block += _integer(4, 4) + _string(path)  # :path (static name 4)
    block += _integer(1, 4) + _string(authority)  # :authority (static name 1)
    block += _integer(31, 4) + _string("application/grpc")  # content-type (static name 31)
    return block + b"\x00" + _string("te") + _string("trailers")


class _Http2Connection(asyncio.Protocol):
    def __init__(self, pacer: Pacer, headers: bytes, message: bytes, answer_bytes: int) -> None:
        self._pacer = pacer
        self._headers = headers
        self._message = message
        self._answer_bytes = answer_bytes
        self._streams: dict[int, list[float]] = {}  # stream id -> [due, message bytes received]
        self._next_stream = 1
        self._send_window = DEFAULT_WINDOW
        self._blocked: deque[bytes] = deque()
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a TCP connection
        increment = (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")
        self._write(
            PREFACE + _frame(SETTINGS, 0, 0, _SETTINGS) + _frame(WINDOW_UPDATE, 0, 0, increment)
        )

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def send(self, due: float) -> None:
        stream, self._next_stream = self._next_stream, self._next_stream + 2
        self._streams[stream] = [due, 0]
        request = _frame(HEADERS, END_HEADERS, stream, self._headers)
        self._blocked.append(request + _frame(DATA, END_STREAM, stream, self._message))
        self._flush()

    def _flush(self) -> None:
        # Streams must open in order, so a request waiting for window holds the later ones.
        while self._blocked and self._send_window >= len(self._message):
            self._send_window -= len(self._message)
            self._write(self._blocked.popleft())

    def in_flight(self) -> Iterable[float]:
        return [due for due, _ in self._streams.values()]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= 9:
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if len(buffer) - offset < 9 + length:
                break
            kind, flags = buffer[offset + 3], buffer[offset + 4]
            stream = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & MAX_WINDOW
            payload = bytes(buffer[offset + 9 : offset + 9 + length])
            offset += 9 + length
            self._received(kind, flags, stream, payload)
        del buffer[:offset]

    def _received(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == DATA:
            entry = self._streams.get(stream)
            if entry is not None:
                entry[1] += len(payload) - (payload[0] + 1 if flags & PADDED else 0)
            if flags & END_STREAM:
                self._finish(stream, reset=False)
        elif kind == HEADERS and flags & END_STREAM:
            self._finish(stream, reset=False)
        elif kind == RST_STREAM:
            self._finish(stream, reset=True)
        elif kind == SETTINGS and not flags & ACK:
            self._write(_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self._write(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE and stream == 0:
            self._send_window += int.from_bytes(payload, "big") & MAX_WINDOW
            self._flush()
        elif kind == GOAWAY:
            self.close()

    def _finish(self, stream: int, *, reset: bool) -> None:
        entry = self._streams.pop(stream, None)
        if entry is not None:
            due, received = entry
            good = not reset and received == self._answer_bytes
            self._pacer.answered(self, 200 if good else 0, due)

    def connection_lost(self, exc: Exception | None) -> None:
        self._pacer.lost(self)
        self._streams.clear()


def run_open_loop_grpc(
    address: str,
    path: str,
    message: bytes,
    answer_bytes: int,
    rate: float,
    duration: float,
    *,
    connections: int,
    streams: int,
) -> dict[str, Any]:
    """Call ``path`` with the framed ``message`` ``rate`` times a second; an answer is good
    when it carries exactly ``answer_bytes`` of gRPC message."""
    host, _, port = address.rpartition(":")
    headers = request_header_block(address, path)

    async def setup(pacer: Pacer) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(connections):
            _, connection = await loop.create_connection(
                lambda: _Http2Connection(pacer, headers, message, answer_bytes), host, int(port)
            )
            pacer.add(connection, streams)

    result: dict[str, Any] = run_paced(setup, rate, duration)
    tool = f"bench.openloop_grpc (h2c, {connections} connections x {streams} streams)"
    return {"tool": tool, **result}
