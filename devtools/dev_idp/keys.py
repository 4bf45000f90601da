"""The provider's signing keys: RS256 keys generated at start, rotated on demand.

The newest key signs; older keys stay in the JWKS until dropped, like a real provider
during a key rollover. ``sign`` also serves the ``/_admin/sign`` forge endpoint, so it
accepts a few deliberately bad choices (an unknown ``kid``, ``alg: none``, HS256 keyed with
the public key) that let tests prove the gateway rejects them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from devtools.dev_idp.errors import AdminRequestError

SIGNING_ALG = "RS256"
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_HMAC_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


class KeyRing:
    """Signing keys, newest first; safe to read while another thread rotates."""

    def __init__(self, key_size: int = 2048):
        self._key_size = key_size
        self._lock = threading.Lock()
        # Replaced, never mutated, so readers can take it without the lock.
        self._keys: tuple[RSAKey, ...] = (self._generate(),)

    def current(self) -> RSAKey:
        """The key that signs new tokens."""
        return self._keys[0]

    def private_key_set(self) -> KeySet:
        """Every key, private parts included, for signers that pick by ``kid``."""
        return KeySet(list(self._keys))

    def public_jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set served at ``/jwks``."""
        return {"keys": [key.as_dict(private=False) for key in self._keys]}

    def kids(self) -> list[str]:
        """Key ids, newest first."""
        return [str(key.kid) for key in self._keys]

    def rotate(self, *, drop_old: bool = False) -> str:
        """Make a new key current; keep the old ones unless ``drop_old``. Returns the new kid."""
        new_key = self._generate()
        with self._lock:
            self._keys = (new_key,) if drop_old else (new_key, *self._keys)
        return str(new_key.kid)

    def sign(
        self,
        claims: dict[str, Any],
        *,
        kid: str | None = None,
        alg: str = SIGNING_ALG,
        header: dict[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` as a JWT with the current key (or the key named by ``kid``).

        A ``kid`` that names no key is written into the header as given while the current
        key signs, which yields a well-formed token whose key cannot be found.
        """
        key = self._key_for(kid)
        protected = {"alg": alg, "kid": kid or key.kid, **(header or {})}
        if alg in _RSA_ALGS:
            if alg != SIGNING_ALG:
                # The JWK pins alg=RS256; a copy without it may sign with RS384, PS256, ...
                material = {k: v for k, v in key.as_dict(private=True).items() if k != "alg"}
                key = RSAKey.import_key(material)
            try:
                return jwt.encode(protected, claims, key, algorithms=[alg])
            except JoseError as exc:
                raise AdminRequestError(f"cannot sign: {exc}") from exc
        if alg == "none":
            return _compact(protected, claims, b"")
        if alg in _HMAC_DIGESTS:
            # The classic algorithm-confusion forgery: HMAC keyed with the public key PEM.
            secret = key.as_pem(private=False)
            signing_input = _signing_input(protected, claims)
            digest = hmac.new(secret, signing_input.encode(), _HMAC_DIGESTS[alg]).digest()
            return _compact(protected, claims, digest)
        raise AdminRequestError(f"unsupported alg {alg!r}")

    def _key_for(self, kid: str | None) -> RSAKey:
        keys = self._keys
        for key in keys:
            if kid is not None and key.kid == kid:
                return key
        return keys[0]

    def _generate(self) -> RSAKey:
        return RSAKey.generate_key(
            self._key_size, parameters={"use": "sig", "alg": SIGNING_ALG}, auto_kid=True
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signing_input(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def encode_part(part: dict[str, Any]) -> str:
        return _b64url(json.dumps(part, separators=(",", ":")).encode())

    return f"{encode_part({'typ': 'JWT', **header})}.{encode_part(claims)}"


def _compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    return f"{_signing_input(header, claims)}.{_b64url(signature)}"
