"""A JSON Web Key Set (RFC 7517) held in memory: keys by ``kid``, refreshed by the runtime.

This module never fetches anything. The runtime downloads the JWKS (HTTP(S) or a
file) and hands the document to :meth:`JwksKeySet.update`. The key set decides
*when* a refresh is wanted:

* :meth:`JwksKeySet.lookup` of a ``kid`` the set does not hold answers
  ``refresh_needed=True`` (an issuer rotated its keys), at most once per
  ``min_refresh_interval_s`` (so a flood of tokens with made-up ``kid``\\ s cannot
  make the gateway hammer the identity provider), and for as long as that refresh
  is in flight;
* :meth:`JwksKeySet.refresh_due` tells a background task when the periodic
  refresh (``refresh_interval_s``, which also drops revoked keys) is due.

Only public signature keys are kept: ``use`` must be absent or ``sig``; symmetric
(``oct``) keys, keys carrying private material and RSA keys under 2048 bits are
skipped (each skip is reported by :meth:`JwksKeySet.update`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError

__all__ = ["InvalidJwks", "JsonWebKey", "JwksKeySet", "KeyLookup", "parse_jwks"]

MIN_RSA_BITS: Final = 2048
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


class InvalidJwks(ValueError):
    """The document is not a usable JWKS (not JSON, no ``keys`` list, no usable key)."""


@dataclass(frozen=True, slots=True)
class JsonWebKey:
    """One public verification key of a JWKS."""

    kid: str | None
    kty: str
    #: The JWK's ``alg`` member, if it pins one; a token must then use exactly it.
    alg: str | None
    key: PublicKey = field(repr=False)

    def supports(self, algorithm: str) -> bool:
        """True if this key may verify a signature made with ``algorithm``."""
        if self.alg is not None and self.alg != algorithm:
            return False
        key = self.key
        if algorithm[:2] in {"RS", "PS"}:
            return isinstance(key, rsa.RSAPublicKey)
        curves = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
        if algorithm in curves:
            return (
                isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == curves[algorithm]
            )
        if algorithm == "EdDSA":
            return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
        return False


def parse_jwks(document: str | bytes | Mapping[str, Any]) -> tuple[list[JsonWebKey], list[str]]:
    """The usable keys of a JWKS document, and a note for every key that was skipped.

    Raises :class:`InvalidJwks` if the document is malformed or has no usable key.
    """
    if isinstance(document, str | bytes):
        try:
            data = json.loads(document)
        except (ValueError, RecursionError) as exc:  # incl. too-long integers, deep nesting
            detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise InvalidJwks(f"the JWKS is not valid JSON: {detail}") from None
    else:
        data = document
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise InvalidJwks('a JWKS is a JSON object with a "keys" list')
    keys: list[JsonWebKey] = []
    skipped: list[str] = []
    seen: set[str | None] = set()
    for index, member in enumerate(data["keys"]):
        label = f"key {index}"
        if isinstance(member, Mapping) and isinstance(member.get("kid"), str):
            label += f" (kid {member['kid']!r})"
        try:
            key = _parse_key(member)
        except ValueError as exc:
            skipped.append(f"{label}: {exc}")
            continue
        if key.kid is not None and key.kid in seen:
            skipped.append(f"{label}: duplicate kid")
            continue
        seen.add(key.kid)
        keys.append(key)
    if not keys:
        reasons = "; ".join(skipped) or "the key list is empty"
        raise InvalidJwks(f"the JWKS has no usable signature key ({reasons})")
    return keys, skipped


def _parse_key(member: Any) -> JsonWebKey:
    if not isinstance(member, Mapping):
        raise ValueError("not a JSON object")
    kty = member.get("kty")
    kid = member.get("kid")
    alg = member.get("alg")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    if alg is not None and not isinstance(alg, str):
        raise ValueError("alg is not a string")
    if member.get("use", "sig") != "sig":
        raise ValueError(f"use is {member.get('use')!r}, not 'sig'")
    if kty == "oct":
        raise ValueError("symmetric (oct) keys are not accepted from a JWKS")
    if kty not in {"RSA", "EC", "OKP"}:
        raise ValueError(f"unsupported key type {kty!r}")
    if _PRIVATE_MEMBERS & set(member):
        raise ValueError("contains private key material")
    try:
        parsed = PyJWK(dict(member)).key
    except (PyJWTError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot be parsed: {exc}") from None
    if not isinstance(
        parsed,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise ValueError("not a public key")
    if isinstance(parsed, rsa.RSAPublicKey) and parsed.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {parsed.key_size} bits (at least {MIN_RSA_BITS} required)")
    return JsonWebKey(kid=kid, kty=str(kty), alg=alg, key=parsed)


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """The answer of :meth:`JwksKeySet.lookup`.

    ``key`` is the key, or ``None``; then ``refresh_needed`` says whether the
    runtime should bring the key set up to date (fetch, or wait for the fetch in
    flight) and try once more.
    """

    key: JsonWebKey | None
    refresh_needed: bool = False


class JwksKeySet:
    """The current keys of one issuer, with the refresh policy. Pure: no I/O.

    ``now`` is wall-clock seconds (``time.time()``) in every method.
    """

    def __init__(
        self,
        *,
        min_refresh_interval_s: float = 30.0,
        refresh_interval_s: float = 3600.0,
        source: str | None = None,
    ) -> None:
        #: Where the runtime gets the document from (URL or file path), for messages.
        self.source = source
        self.min_refresh_interval_s = min_refresh_interval_s
        self.refresh_interval_s = refresh_interval_s
        self._keys: dict[str | None, JsonWebKey] = {}
        self._updated_at: float | None = None
        self._refresh_started_at: float | None = None
        self._refresh_pending = False

    @classmethod
    def from_document(
        cls, document: str | bytes | Mapping[str, Any], now: float, **options: Any
    ) -> JwksKeySet:
        """A key set loaded from ``document`` (raises :class:`InvalidJwks`)."""
        key_set = cls(**options)
        key_set.update(document, now)
        return key_set

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid`` of every key held."""
        return frozenset(kid for kid in self._keys if kid is not None)

    @property
    def loaded(self) -> bool:
        """True once a document was loaded successfully."""
        return self._updated_at is not None

    @property
    def updated_at(self) -> float | None:
        """When the current keys were loaded."""
        return self._updated_at

    def update(self, document: str | bytes | Mapping[str, Any], now: float) -> list[str]:
        """Replace the keys with the document's; returns a note per skipped key.

        On :class:`InvalidJwks` the previous keys stay in place (a broken response
        from the identity provider does not lock every client out) and the pending
        refresh ends as failed.
        """
        try:
            keys, skipped = parse_jwks(document)
        except InvalidJwks:
            self.refresh_failed(now)
            raise
        self._keys = {key.kid: key for key in keys}
        self._updated_at = now
        self._refresh_pending = False
        return skipped

    def lookup(self, kid: str | None, now: float) -> KeyLookup:
        """The key for ``kid`` (a token without ``kid`` only matches a one-key set).

        A ``kid`` the set does not hold answers ``refresh_needed=True`` if a
        refresh may start now (recorded as started) or one is already in flight.
        """
        if kid is None:
            if len(self._keys) == 1:
                return KeyLookup(next(iter(self._keys.values())))
            return KeyLookup(None, refresh_needed=not self.loaded and self.begin_refresh(now))
        key = self._keys.get(kid)
        if key is not None:
            return KeyLookup(key)
        return KeyLookup(
            None, refresh_needed=self.refresh_in_flight(now) or self.begin_refresh(now)
        )

    def begin_refresh(self, now: float) -> bool:
        """Claim a refresh: True (and recorded) unless one started in the last
        ``min_refresh_interval_s``."""
        last = self._refresh_started_at
        if last is not None and now - last < self.min_refresh_interval_s:
            return False
        self._refresh_started_at = now
        self._refresh_pending = True
        return True

    def refresh_in_flight(self, now: float) -> bool:
        """True while a claimed refresh has neither completed nor failed (nor timed out)."""
        last = self._refresh_started_at
        return (
            self._refresh_pending and last is not None and now - last < self.min_refresh_interval_s
        )

    def refresh_failed(self, now: float) -> None:
        """The runtime could not fetch the document: the next refresh waits for the rate limit."""
        self._refresh_pending = False

    def refresh_due(self, now: float) -> bool:
        """True when a periodic refresh should start (never loaded, or stale).

        Stale means older than ``refresh_interval_s``.

        It respects the rate limit; call :meth:`begin_refresh` before fetching.
        """
        stale = self._updated_at is None or now - self._updated_at >= self.refresh_interval_s
        last = self._refresh_started_at
        return stale and (last is None or now - last >= self.min_refresh_interval_s)
