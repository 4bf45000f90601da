"""SIGHUPs while servers start (a reload forwarded to a worker being started or restarted,
to the children of ``gateway run``): every one is a reload, none ends a process.

A storm sends SIGHUP every few milliseconds to every process under the one the test
launched, from the instant each exists (while it is still importing its modules), and to the
launched one itself from the instant it can be protected at all: its first statement holds
SIGHUP, and no process can do anything about one that lands while the interpreter itself is
starting. It goes on until after everything serves; the configuration file is changed during
the storm. Afterwards every process is the one that started, and the change is in effect.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests

from devtools.processes import ManagedProcess, free_ports, port_open
from tests.support.checks import check, wait_until_feed_serving
from tests.support.polling import wait_for
from tests.support.servers import EchoBackend, RedisServer, base_config, gateway_env, write_config

pytestmark = pytest.mark.integration

STORM_INTERVAL = 0.01
STORM_AFTER_SERVING = 1.5  # seconds of storm once the server answers, the file changed in it
LATE_ROUTE = {"name": "late", "prefix": "/late/", "upstream": "http://127.0.0.1:1", "public": True}


class HangupStorm:
    """SIGHUP every ``STORM_INTERVAL`` to a process and all its descendants, in a thread."""

    def __init__(self, process: ManagedProcess) -> None:
        self._process = process
        self._stop = threading.Event()
        self.sent = 0
        self.seen: set[int] = set()  # every pid that was sent a SIGHUP
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HangupStorm:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while self._process.process is None:  # start() launches it in the test's thread
            if self._stop.wait(0.0005):
                return
        root = self._process.process.pid
        root_ready = False
        while not self._stop.wait(STORM_INTERVAL):
            root_ready = root_ready or hangup_handled_or_held(root)
            for pid in [root] * root_ready + descendants(root):
                try:
                    os.kill(pid, signal.SIGHUP)
                except ProcessLookupError:
                    continue
                self.sent += 1
                self.seen.add(pid)


def descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # it is gone
        return []
    return [grand for child in children for grand in (child, *descendants(child))]


def stop_with_leftovers(process: ManagedProcess, storm: HangupStorm) -> None:
    """Stop the server, then any process of ours it left behind (workers of a supervisor
    that had to be killed), so a failed run leaves nothing running."""
    process.stop()
    for pid in storm.seen - {process.pid}:
        try:
            if alive(pid) and "multiprocessing" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
        except OSError:  # gone already
            continue


def hangup_handled_or_held(pid: int) -> bool:
    """SIGHUP is blocked, caught or ignored by ``pid`` (its main thread, per /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    either = int(masks["SigBlk"], 16) | int(masks["SigCgt"], 16) | int(masks["SigIgn"], 16)
    return bool(either & (1 << (signal.SIGHUP - 1)))


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie is dead, only not yet reaped


def log_entries(process: ManagedProcess) -> Iterator[dict]:
    for line in process.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


def late_route_status(address: str) -> int:
    """The Check's gRPC status for the route the storm's change adds (0: allowed)."""
    try:
        return check(address, "", path="/late/x", route="late", timeout=2).status.code
    except grpc.RpcError:
        return -1


@pytest.fixture
def raw_config(redis_server: RedisServer, echo_backend: EchoBackend) -> dict:
    return base_config(redis_url=redis_server.url, backend_url=echo_backend.url)


def test_ext_authz_workers_take_a_hangup_storm_from_their_start_as_reloads(
    tmp_path: Path, raw_config: dict
) -> None:
    workers = 2
    first = free_ports(workers)
    addresses = [f"127.0.0.1:{first + i}" for i in range(workers)]
    raw_config["ext_authz"].update(listen=addresses[0], workers=workers)
    config_path = write_config(tmp_path / "gateway.yaml", raw_config)
    authz = ManagedProcess(
        "ext-authz-storm",
        [sys.executable, "-m", "ext_authz", "--config", str(config_path)],
        env=gateway_env(),
    )
    storm = HangupStorm(authz)
    try:
        with storm:
            authz.start(lambda: all(port_open(first + i) for i in range(workers)), timeout=60)
            for address in addresses:
                wait_until_feed_serving(address, timeout=60)
            assert {late_route_status(address) for address in addresses} != {0}
            raw_config["routes"].append(LATE_ROUTE)
            write_config(config_path, raw_config)
            time.sleep(STORM_AFTER_SERVING)  # the storm goes on over the change
        assert storm.sent > 100
        started = [e["pid"] for e in log_entries(authz) if e.get("message") == "worker started"]
        assert len(started) == workers, authz.output()  # none died, none was replaced
        assert all(alive(pid) for pid in [authz.pid, *started]), authz.output()
        for address in addresses:
            wait_for(
                lambda a=address: late_route_status(a) == 0, f"{address} to reload", timeout=60.0
            )
        assert authz.stop() == 0, authz.output()  # and it still stops cleanly
    finally:
        stop_with_leftovers(authz, storm)


def test_gateway_run_and_its_servers_take_a_hangup_storm_from_their_start_as_reloads(
    tmp_path: Path, raw_config: dict
) -> None:
    """``gateway run``: the single-process ext_authz and the login app, as its children."""
    authz_address = raw_config["ext_authz"]["listen"] = f"127.0.0.1:{free_ports(1)}"
    login_address = raw_config["login_app"]["listen"]
    config_path = write_config(tmp_path / "gateway.yaml", raw_config)
    run = ManagedProcess(
        "gateway-run-storm",
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config_path)],
        env=gateway_env(),
    )

    def both_listen() -> bool:
        return all(port_open(int(a.rpartition(":")[2])) for a in (authz_address, login_address))

    storm = HangupStorm(run)
    try:
        with storm:
            run.start(both_listen, timeout=60)
            wait_until_feed_serving(authz_address, timeout=60)
            children = descendants(run.pid)
            health = requests.get(f"http://{login_address}/auth/health", timeout=10)
            assert health.status_code == 200
            assert late_route_status(authz_address) != 0
            raw_config["routes"].append(LATE_ROUTE)
            raw_config["providers"].append({**raw_config["providers"][1], "id": "late"})
            write_config(config_path, raw_config)
            time.sleep(STORM_AFTER_SERVING)
        assert storm.sent > 100
        assert len(children) == 2 and all(alive(pid) for pid in [run.pid, *children])

        def login_app_reloaded_the_change() -> bool:
            return any(
                e.get("message") == "configuration reloaded" and e.get("providers") == 3
                for e in log_entries(run)
            )

        wait_for(lambda: late_route_status(authz_address) == 0, "ext_authz to reload", timeout=60.0)
        wait_for(
            login_app_reloaded_the_change, "the login app to reload the changed file", timeout=60.0
        )
        assert requests.get(f"http://{login_address}/auth/health", timeout=10).status_code == 200
    finally:
        stop_with_leftovers(run, storm)
