"""Redis storage of the CLI login's device codes (the rules live in device_codes.py).

Keys, under the key prefix:

    device:{<device id>}        hash: status, user_code, expires_at, last_poll, interval,
                                device_key, and once approved credential + session_expires_at
    device-user:{<user code>}   the device id, so the approving browser finds the record
    device-guess:{<client>}     user-code look-ups a client made in the current window
    device-start:{<client>}     flows a client started in the current window

The user-code key cannot share the device's hash slot (the browser knows only the user
code), so every multi-step update here touches one key at a time. Transactions ask for
``transaction=True`` explicitly: a cluster client's pipeline is otherwise non-transactional
and refuses WATCH.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from flask import current_app
from redis.typing import EncodableT, FieldT

from gateway.crypto import RecordCipher
from gateway.errors import SessionInvalid
from gateway.redis.clients import REDIS_FAILURES, translate_redis_errors
from gateway.sessions.keyspace import Keyspace
from login_app.device_codes import (
    EXPIRED_GRACE_SECONDS,
    EXPIRES_IN_SECONDS,
    MAX_DEVICE_CODE_LENGTH,
    POLL_INTERVAL_SECONDS,
    TRANSACTION_TRIES,
    PollResult,
    Status,
    device_id_for,
    device_public_key,
    new_device_code,
    new_user_code,
    open_for_device,
    poll_outcome,
    seal_for_device,
)
from login_app.errors import LoginError


def device_codes() -> DeviceCodeStore:
    """The current app's device store (part of its services, so a reload replaces it too)."""
    # Not through login_app.services.services(): that module imports this one.
    return current_app.extensions["gateway"].device_codes


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    status: Status
    user_code: str
    expires_at: float
    last_poll: float
    interval: int
    device_key: bytes
    sealed_credential: bytes = b""
    session_expires_at: int = 0

    @classmethod
    def from_fields(cls, device_id: str, fields: Mapping[Any, Any]) -> DeviceRecord | None:
        """The record a Redis hash holds (bytes to bytes); None for an empty or partial one."""

        def text(name: str) -> str:
            return bytes(fields[name.encode()]).decode("ascii")

        try:
            return cls(
                device_id=device_id,
                status=Status(text("status")),
                user_code=text("user_code"),
                expires_at=float(text("expires_at")),
                last_poll=float(text("last_poll")),
                interval=int(text("interval")),
                device_key=bytes(fields[b"device_key"]),
                sealed_credential=bytes(fields.get(b"credential", b"")),
                session_expires_at=int(fields.get(b"session_expires_at", b"0")),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def pending_at(self, now: float) -> bool:
        return self.status is Status.PENDING and now < self.expires_at


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    credential: str
    session_expires_at: int


class DeviceCodeStore:
    """Device records in Redis; every read-decide-write runs as a WATCH/MULTI transaction."""

    def __init__(
        self,
        client: redis.Redis,
        cipher: RecordCipher,
        keys: Keyspace,
        *,
        expires_in: int = EXPIRES_IN_SECONDS,
        interval: int = POLL_INTERVAL_SECONDS,
    ) -> None:
        self._redis = client
        self._cipher = cipher
        self._keys = keys
        self.expires_in = expires_in
        self.interval = interval
        self._refund = client.register_script(_REFUND_SCRIPT)

    def record_key(self, device_id: str) -> str:
        return self._keys.device(device_id)

    def user_code_key(self, user_code: str) -> str:
        return self._keys.device_user_code(user_code)

    def start(self, now: float) -> tuple[str, str]:
        """A new pending flow; returns (device_code, user_code)."""
        device_code = new_device_code()
        device_id = device_id_for(device_code)
        with translate_redis_errors("starting a CLI login"):
            for _ in range(TRANSACTION_TRIES):
                user_code = new_user_code()
                # NX: a user code names one live flow; on the rare collision draw another.
                if self._redis.set(
                    self.user_code_key(user_code), device_id, nx=True, ex=self.expires_in
                ):
                    break
            else:
                raise LoginError("could not find a free user code")
            key = self.record_key(device_id)
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(
                key,
                mapping={
                    "status": Status.PENDING.value,
                    "user_code": user_code,
                    "expires_at": repr(now + self.expires_in),
                    "last_poll": "0",
                    "interval": str(self.interval),
                    "device_key": device_public_key(device_code),
                },
            )
            pipe.expire(key, self.expires_in + EXPIRED_GRACE_SECONDS)
            pipe.execute()
        return device_code, user_code

    def find(self, user_code: str) -> DeviceRecord | None:
        """The record a (normalised) user code names, in whatever state it is."""
        with translate_redis_errors("looking up a user code"):
            device_id = self._redis.get(self.user_code_key(user_code))
            if device_id is None:
                return None
            try:
                device_id = bytes(device_id).decode("ascii")  # type: ignore[arg-type]  # a bytes client returns bytes
            except UnicodeDecodeError:
                return None  # only ever a hex id is written here: nothing it could name
            fields = self._redis.hgetall(self.record_key(device_id))
        return DeviceRecord.from_fields(device_id, fields)

    def approve(self, device_id: str, credential: str, session_expires_at: int, now: float) -> bool:
        """Hand ``credential`` to the device, sealed; False unless the flow was pending."""
        key = self.record_key(device_id)

        def update(record: DeviceRecord) -> Mapping[FieldT, EncodableT]:
            sealed = seal_for_device(
                self._cipher,
                record.device_key,
                credential.encode("ascii"),
                associated=key.encode("ascii"),
            )
            return {
                "status": Status.APPROVED.value,
                "credential": sealed,
                "session_expires_at": str(session_expires_at),
            }

        return self._settle(device_id, now, update, "approving a CLI login")

    def deny(self, device_id: str, now: float) -> bool:
        """Refuse the flow; False unless it was pending."""
        return self._settle(
            device_id, now, lambda _: {"status": Status.DENIED.value}, "denying a CLI login"
        )

    def _settle(
        self,
        device_id: str,
        now: float,
        update: Callable[[DeviceRecord], Mapping[FieldT, EncodableT]],
        action: str,
    ) -> bool:
        key = self.record_key(device_id)
        with translate_redis_errors(action), self._redis.pipeline(transaction=True) as pipe:
            for _ in range(TRANSACTION_TRIES):
                try:
                    pipe.watch(key)
                    record = DeviceRecord.from_fields(device_id, pipe.hgetall(key))
                    if record is None or not record.pending_at(now):
                        return False
                    pipe.multi()
                    pipe.hset(key, mapping=update(record))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # a poll touched the record in between: decide again
        raise LoginError(f"the device record kept changing while {action}")

    def poll(self, device_code: str, now: float) -> tuple[PollResult, DeviceGrant | None]:
        """One poll of the token endpoint; an approved credential is handed out only once."""
        if not _DEVICE_CODE.fullmatch(device_code):
            return PollResult.INVALID_GRANT, None
        device_id = device_id_for(device_code)
        key = self.record_key(device_id)
        with (
            translate_redis_errors("polling a CLI login"),
            self._redis.pipeline(transaction=True) as pipe,
        ):
            for _ in range(TRANSACTION_TRIES):
                try:
                    pipe.watch(key)
                    record = DeviceRecord.from_fields(device_id, pipe.hgetall(key))
                    if record is None:
                        return PollResult.INVALID_GRANT, None
                    result, interval = poll_outcome(
                        record.status,
                        last_poll=record.last_poll,
                        interval=record.interval,
                        expires_at=record.expires_at,
                        now=now,
                    )
                    if result is PollResult.APPROVED:
                        return self._hand_out(pipe, record, device_code)
                    if result in (PollResult.AUTHORIZATION_PENDING, PollResult.SLOW_DOWN):
                        pipe.multi()
                        pipe.hset(key, mapping={"last_poll": repr(now), "interval": interval})
                        pipe.execute()
                    return result, None
                except redis.WatchError:
                    continue
        # Only polls racing each other keep changing a pending record: they are too fast.
        return PollResult.SLOW_DOWN, None

    def _hand_out(
        self, pipe: redis.client.Pipeline, record: DeviceRecord, device_code: str
    ) -> tuple[PollResult, DeviceGrant | None]:
        key = self.record_key(record.device_id)
        # The delete commits only if nobody changed the record since WATCH, so of two racing
        # polls exactly one succeeds; the other retries, finds nothing, gets invalid_grant.
        pipe.multi()
        pipe.delete(key)
        pipe.execute()
        try:
            self._redis.delete(self.user_code_key(record.user_code))
        except REDIS_FAILURES:
            pass  # it expires with the code anyway; the token must not be lost over it
        try:
            credential = open_for_device(
                self._cipher,
                device_code,
                record.sealed_credential,
                associated=key.encode("ascii"),
            )
        except SessionInvalid:
            return PollResult.INVALID_GRANT, None
        grant = DeviceGrant(credential.decode("ascii"), record.session_expires_at)
        return PollResult.APPROVED, grant

    # -- rate limits (fixed windows) ----------------------------------------------------------

    def _counter_key(self, kind: str, client: str) -> str:
        return self._keys.device_counter(kind, client)

    def take(self, kind: str, client: str, *, limit: int, window: int) -> bool:
        """Count one request of ``kind`` from ``client``; False once over ``limit``."""
        key = self._counter_key(kind, client)
        with translate_redis_errors("counting requests"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(key, 0, ex=window, nx=True)
            pipe.incr(key)
            count = pipe.execute()[1]
        return int(count) <= limit

    def give_back(self, kind: str, client: str) -> None:
        """Undo one :meth:`take` (a look-up that found its code is not a guess)."""
        with translate_redis_errors("counting requests"):
            self._refund(keys=[self._counter_key(kind, client)])


# What new_device_code() makes is URL-safe base64; anything else (say a lone surrogate in a
# JSON body, which UTF-8 cannot encode) is no device code.
_DEVICE_CODE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_DEVICE_CODE_LENGTH}}}")

# DECR keeps the window's TTL; a key that expired meanwhile is recreated by DECR without one,
# so it is deleted rather than left behind forever.
_REFUND_SCRIPT = """
local left = redis.call('DECR', KEYS[1])
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left
"""
