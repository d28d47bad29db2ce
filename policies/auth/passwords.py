"""Salted password hashes for PLAIN users: scrypt (RFC 7914) in a self-describing string.

The stored form is ``scrypt$n=16384,r=8,p=1$<salt>$<hash>`` (salt and hash in
standard base64), produced by ``kafka-gateway hash-password``. Only hashes are
ever stored; :func:`verify_password` recomputes the hash with the stored salt and
parameters and compares in constant time.

scrypt with the default parameters takes tens of milliseconds of CPU and 16 MiB
of memory on purpose: call :func:`verify_password` from a worker thread
(``trio.to_thread.run_sync``), never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_SCRYPT_N",
    "DEFAULT_SCRYPT_P",
    "DEFAULT_SCRYPT_R",
    "InvalidPasswordHash",
    "PasswordHash",
    "dummy_password_hash",
    "hash_password",
    "verify_password",
]

DEFAULT_SCRYPT_N: Final = 2**14
DEFAULT_SCRYPT_R: Final = 8
DEFAULT_SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
HASH_BYTES: Final = 32

# Bounds on stored parameters: a hash from an untrusted file must not make the
# gateway allocate gigabytes or spin for minutes.
_MAX_N: Final = 2**20
_MAX_R: Final = 32
_MAX_P: Final = 16
_MAX_MEMORY: Final = 1024 * 1024 * 1024
_PREFIX: Final = "scrypt"
_HINT: Final = "store only hashes: run kafka-gateway hash-password"


class InvalidPasswordHash(ValueError):
    """A stored password hash is not in the ``scrypt$...`` format (a configuration error)."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed ``scrypt$n=..,r=..,p=..$salt$hash`` string."""

    n: int
    r: int
    p: int
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    @classmethod
    def parse(cls, stored: str) -> PasswordHash:
        """Parse a stored hash; :class:`InvalidPasswordHash` says what is wrong."""
        parts = stored.split("$")
        if len(parts) != 4 or parts[0] != _PREFIX:
            raise InvalidPasswordHash(
                f"not a password hash (expected 'scrypt$n=...,r=...,p=...$salt$hash'); {_HINT}"
            )
        params: dict[str, int] = {}
        for item in parts[1].split(","):
            key, sep, value = item.partition("=")
            if not sep or key not in {"n", "r", "p"} or key in params or not value.isdigit():
                raise InvalidPasswordHash(f"invalid scrypt parameters {parts[1]!r}; {_HINT}")
            params[key] = int(value)
        if set(params) != {"n", "r", "p"}:
            raise InvalidPasswordHash(f"scrypt parameters need n, r and p; {_HINT}")
        n, r, p = params["n"], params["r"], params["p"]
        if n < 2 or n > _MAX_N or n & (n - 1):
            raise InvalidPasswordHash(f"scrypt n must be a power of 2 in 2..{_MAX_N}, got {n}")
        if not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
            raise InvalidPasswordHash(
                f"scrypt r must be in 1..{_MAX_R} and p in 1..{_MAX_P}, got r={r}, p={p}"
            )
        salt = _b64decode(parts[2], "salt")
        digest = _b64decode(parts[3], "hash")
        if len(salt) < 8 or len(digest) < 16:
            raise InvalidPasswordHash("salt must be at least 8 bytes and hash at least 16 bytes")
        return cls(n=n, r=r, p=p, salt=salt, digest=digest)

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        return f"{_PREFIX}$n={self.n},r={self.r},p={self.p}${salt}${digest}"

    def matches(self, password: str) -> bool:
        """Recompute the hash of ``password`` with these parameters; constant-time compare."""
        candidate = _scrypt(
            password.encode("utf-8"), self.salt, self.n, self.r, self.p, len(self.digest)
        )
        return hmac.compare_digest(candidate, self.digest)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPasswordHash(f"the {what} is not valid base64; {_HINT}") from None


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    memory = 128 * r * (n + p + 2)
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=min(_MAX_MEMORY, 2 * memory), dklen=dklen
    )


def hash_password(
    password: str,
    *,
    salt: bytes | None = None,
    n: int = DEFAULT_SCRYPT_N,
    r: int = DEFAULT_SCRYPT_R,
    p: int = DEFAULT_SCRYPT_P,
) -> str:
    """The stored form of ``password``: ``scrypt$n=16384,r=8,p=1$<salt>$<hash>``.

    ``salt`` defaults to 16 fresh random bytes (pass one only for reproducible tests).
    """
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password.encode("utf-8"), salt, n, r, p, HASH_BYTES)
    stored = str(PasswordHash(n=n, r=r, p=p, salt=salt, digest=digest))
    PasswordHash.parse(stored)  # the parameters are within the accepted bounds
    return stored


def verify_password(password: str, stored: str | PasswordHash) -> bool:
    """True if ``password`` matches ``stored`` (constant-time comparison).

    Raises :class:`InvalidPasswordHash` for a malformed stored hash; configuration
    validation rejects those, so at runtime this only happens for hashes that did
    not come through the config.
    """
    parsed = stored if isinstance(stored, PasswordHash) else PasswordHash.parse(stored)
    return parsed.matches(password)


_DUMMY_SALT: Final = b"kafka-gateway-unknown-user"


def dummy_password_hash(like: PasswordHash | None = None) -> PasswordHash:
    """A hash no password matches, with ``like``'s cost parameters.

    Verifying an unknown user's password against it costs as much as a real
    check, so response times do not reveal which users exist.
    """
    n, r, p = (
        (like.n, like.r, like.p) if like else (DEFAULT_SCRYPT_N, DEFAULT_SCRYPT_R, DEFAULT_SCRYPT_P)
    )
    digest_len = len(like.digest) if like else HASH_BYTES
    return PasswordHash(n=n, r=r, p=p, salt=_DUMMY_SALT, digest=os.urandom(digest_len))
