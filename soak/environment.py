"""The whole gateway started for a soak, with the processes whose memory and liveness we watch."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.processes import ManagedProcess
from tests.support.servers import EchoBackend, RedisServer
from tests.support.stack import Stack, start_stack

SOAK_USERS = ("alice", "bob")  # both IdPs know them; password = user name


@dataclass(frozen=True)
class Component:
    """One process of the gateway whose resident memory the soak reports."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Environment:
    stack: Stack
    redis: RedisServer
    components: list[Component]


def _idp_args(access_token_ttl: int) -> list[str]:
    users = [
        "alice:alice:alice@example.org:Alice Ärger:admins+users",
        "bob:bob:bob@example.org:Bob Builder:users",
    ]
    args = ["--access-token-ttl", str(access_token_ttl), "--rotate-refresh-tokens"]
    for user in users:
        args += ["--user", user]
    return args


def _components(stack: Stack) -> list[Component]:
    # servers.py exposes the process only for ext_authz workers; reading the private
    # ManagedProcess of the login app and Envoy avoids editing shared test support.
    managed: list[tuple[str, ManagedProcess]] = [
        (f"ext_authz-{index}", worker.process) for index, worker in enumerate(stack.workers)
    ]
    if stack.supervisor is not None:
        managed.append(("ext_authz-supervisor", stack.supervisor.process))
    assert stack.login_app is not None
    managed.append(("login_app", stack.login_app._process))
    if stack.envoy._process is not None:
        managed.append(("envoy", stack.envoy._process))
    components = []
    for name, process in managed:
        assert process.process is not None, f"{name} was not started"
        components.append(Component(name, process.process, process.log_path))
    return components


@contextmanager
def running_gateway(
    *,
    access_token_ttl: int,
    authz_workers: int,
    log_level: str,
    supervised: bool = False,
    durable_redis: bool = False,
) -> Iterator[Environment]:
    """Start Redis, the echo backend and the full stack with login; stop all of it on exit.

    ``supervised`` runs the ext_authz workers under one supervisor as deployed;
    ``durable_redis`` gives Redis the shipped persistence (it can then be killed and
    restarted without losing acknowledged writes)."""

    def adjust(raw: dict[str, Any]) -> None:
        raw["log_level"] = log_level

    with tempfile.TemporaryDirectory(prefix="soak-") as scratch, ExitStack() as started:
        directory = Path(scratch)
        redis = RedisServer(directory, persistence=durable_redis).start()
        started.callback(redis.stop)
        backend = EchoBackend().start()
        started.callback(backend.stop)
        stack = start_stack(
            directory,
            redis,
            backend,
            adjust,
            with_login=True,
            idp_args=_idp_args(access_token_ttl),
            authz_workers=authz_workers,
            supervised=supervised,
        )
        started.callback(stack.stop)
        yield Environment(stack, redis, _components(stack))
