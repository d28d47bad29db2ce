"""JWT validation for OAUTHBEARER: per-issuer pinned algorithms, JWKS keys, claims at ``now``.

:meth:`JwtValidator.validate` returns a :class:`ValidatedToken` or raises
:class:`TokenRejected`. The checks, in order:

0. the token is at most :data:`MAX_TOKEN_CHARS` characters and its header and
   payload JSON nest at most :data:`MAX_JSON_DEPTH` levels (checked on the bytes,
   before any JSON parser runs: Python's would recurse until RecursionError);
1. the token parses as a JWS compact serialisation; ``alg`` is not ``none``
   (never accepted, whatever the configuration says) and no ``crit`` header;
2. the (unverified) ``iss`` names a configured issuer;
3. ``alg`` is one the issuer pins. ``HS*`` are only usable with the issuer's
   configured shared secret, and JWKS keys are only used for asymmetric
   algorithms of their own key type, so an ``HS256`` token "signed" with an RSA
   public key can never verify;
4. the key: the shared secret, or the JWKS key named by ``kid``. An unknown
   ``kid`` rejects the token with ``needs_refresh`` when the issuer's key set
   wants a refresh: the runtime fetches the JWKS, calls
   :meth:`~policies.auth.jwks.JwksKeySet.update` and validates once more;
5. the signature (pyjwt, with the algorithm list pinned to the header's ``alg``);
6. ``exp`` (required), ``nbf`` and ``iat`` against ``now`` with the issuer's leeway;
   ``aud`` must contain one of the issuer's audiences; every required claim is
   present; the principal claim (default ``sub``) is a non-empty string.

The principal name is the issuer's ``principal_prefix`` followed by the principal
claim, so two issuers with their own prefixes never assert the same principal.

Time checks use the ``now`` passed in, not the system clock, so they are
deterministic in tests.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jwt import PyJWS
from jwt.exceptions import InvalidSignatureError, PyJWTError

from policies.auth.jwks import JwksKeySet

if TYPE_CHECKING:
    from policies.config import OAuthBearerConfig

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "IssuerPolicy",
    "JwtValidator",
    "TokenRejected",
    "TokenRejection",
    "ValidatedToken",
]

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_HMAC_MIN_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
_SHOWN_CHARS: Final = 80
#: Longest token accepted (a JWT with many group claims is a few KiB).
MAX_TOKEN_CHARS: Final = 16 * 1024
#: Deepest JSON nesting accepted in a token's header or payload.
MAX_JSON_DEPTH: Final = 16
_JSON_STRING_RE: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")


class TokenRejection(StrEnum):
    """Why a JWT was rejected (the detail of an ``invalid_token`` audit event)."""

    MALFORMED = "malformed_token"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_KEY = "unknown_key"
    KEY_MISMATCH = "key_mismatch"
    INVALID_SIGNATURE = "invalid_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ISSUED_IN_FUTURE = "issued_in_future"
    WRONG_AUDIENCE = "wrong_audience"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"


class TokenRejected(Exception):
    """The token is not acceptable. ``detail`` never contains the token itself.

    ``refresh_issuer`` is set when the token named a key the issuer's key set does
    not hold and a refresh is wanted: fetch that issuer's JWKS, update the key set
    (:meth:`JwtValidator.key_set`), then validate once more.
    """

    def __init__(
        self, reason: TokenRejection, detail: str, *, refresh_issuer: str | None = None
    ) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.refresh_issuer = refresh_issuer

    @property
    def needs_refresh(self) -> bool:
        """True when refreshing the issuer's JWKS may make the token valid."""
        return self.refresh_issuer is not None


@dataclass(frozen=True, slots=True)
class ValidatedToken:
    """A token that passed every check."""

    principal_name: str
    issuer: str
    expires_at: float
    claims: Mapping[str, Any] = field(repr=False)
    #: The issuer's ``principal_prefix``: ``principal_name`` starts with it.
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    """What one trusted issuer's tokens must look like."""

    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256",)
    key_set: JwksKeySet | None = None
    hmac_secret: bytes | None = field(default=None, repr=False)
    principal_claim: str = "sub"
    #: Prepended to the principal claim (and to claim values ACL ``Claim:`` rules see).
    principal_prefix: str = ""
    required_claims: tuple[str, ...] = ()
    leeway_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.audiences:
            raise ValueError(f"issuer {self.issuer!r}: at least one audience is required")
        unknown = set(self.algorithms) - HMAC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ValueError(f"issuer {self.issuer!r}: unsupported algorithms {sorted(unknown)}")
        hmac_algs = HMAC_ALGORITHMS.intersection(self.algorithms)
        if hmac_algs and self.hmac_secret is None:
            raise ValueError(f"issuer {self.issuer!r}: HS* algorithms need a shared secret")
        for alg in hmac_algs:
            if self.hmac_secret is not None and len(self.hmac_secret) < _HMAC_MIN_BYTES[alg]:
                raise ValueError(
                    f"issuer {self.issuer!r}: the {alg} secret must be at least "
                    f"{_HMAC_MIN_BYTES[alg]} bytes"
                )
        if ASYMMETRIC_ALGORITHMS.intersection(self.algorithms) and self.key_set is None:
            raise ValueError(f"issuer {self.issuer!r}: asymmetric algorithms need a JWKS")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_token_shape(token: str) -> None:
    """Size and JSON nesting depth of ``token``, before any parser sees it."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRejected(
            TokenRejection.MALFORMED,
            f"the token is {len(token)} characters long (at most {MAX_TOKEN_CHARS})",
        )
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenRejected(TokenRejection.MALFORMED, "not a signed JWT (expected 3 segments)")
    for name, segment in (("header", segments[0]), ("payload", segments[1])):
        try:
            data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):
            raise TokenRejected(TokenRejection.MALFORMED, f"the {name} is not base64url") from None
        if _json_depth(data) > MAX_JSON_DEPTH:
            raise TokenRejected(
                TokenRejection.MALFORMED,
                f"the {name} JSON nests deeper than {MAX_JSON_DEPTH} levels",
            )


def _json_depth(data: bytes) -> int:
    """Deepest ``[``/``{`` nesting in JSON ``data`` (brackets inside strings ignored).

    Linear in ``len(data)``; on invalid JSON the answer is approximate, which is
    fine: the parser rejects it afterwards.
    """
    brackets = _JSON_STRING_RE.sub(b"", data).translate(None, _NOT_A_BRACKET)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class JwtValidator:
    """Validates OAUTHBEARER tokens against the configured issuers."""

    def __init__(self, issuers: Sequence[IssuerPolicy]) -> None:
        self._issuers = {policy.issuer: policy for policy in issuers}
        if len(self._issuers) != len(issuers):
            raise ValueError("issuers must be unique")
        self._jws = PyJWS()

    @classmethod
    def from_config(
        cls,
        config: OAuthBearerConfig,
        now: float,
        key_sets: Mapping[str, JwksKeySet] | None = None,
    ) -> JwtValidator:
        """A validator for ``listener.authentication.oauthbearer``.

        Key sets come from ``key_sets`` (by issuer; pass the previous validator's
        to keep fetched keys across a configuration reload); otherwise an issuer
        with ``jwks_file`` gets it loaded now, and one with ``jwks_url`` an empty
        key set the runtime fills (its first lookup asks for a refresh).
        """
        policies = []
        for issuer in config.issuers:
            key_set = (key_sets or {}).get(issuer.issuer)
            if key_set is None and (issuer.jwks_file or issuer.jwks_url):
                key_set = JwksKeySet(
                    min_refresh_interval_s=issuer.jwks_refresh_min_interval_s,
                    refresh_interval_s=issuer.jwks_refresh_interval_s,
                    source=issuer.jwks_url or issuer.jwks_file,
                )
                if issuer.jwks_file:
                    key_set.update(Path(issuer.jwks_file).read_bytes(), now)
            secret = issuer.hmac_secret.get_secret_value().encode() if issuer.hmac_secret else None
            policies.append(
                IssuerPolicy(
                    issuer=issuer.issuer,
                    audiences=tuple(issuer.audience),
                    algorithms=tuple(issuer.algorithms),
                    key_set=key_set,
                    hmac_secret=secret,
                    principal_claim=issuer.principal_claim,
                    principal_prefix=issuer.principal_prefix,
                    required_claims=tuple(issuer.required_claims),
                    leeway_s=float(issuer.leeway_s),
                )
            )
        return cls(policies)

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._issuers)

    def key_set(self, issuer: str) -> JwksKeySet | None:
        """The key set of ``issuer`` (``KeyError`` if it is not configured)."""
        return self._issuers[issuer].key_set

    def key_sets(self) -> dict[str, JwksKeySet]:
        """Every issuer's key set, by issuer."""
        return {name: p.key_set for name, p in self._issuers.items() if p.key_set is not None}

    def validate(self, token: str, now: float) -> ValidatedToken:
        """Check ``token`` at wall-clock time ``now``; raises :class:`TokenRejected`."""
        _check_token_shape(token)
        try:
            unverified = self._jws.decode_complete(token, options={"verify_signature": False})
            header = unverified["header"]
            claims = json.loads(unverified["payload"])
        except (PyJWTError, ValueError, TypeError, RecursionError):
            raise TokenRejected(TokenRejection.MALFORMED, "not a signed JWT") from None
        if not isinstance(claims, dict):
            raise TokenRejected(TokenRejection.MALFORMED, "the JWT payload is not a JSON object")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenRejected(
                TokenRejection.ALGORITHM_NOT_ALLOWED,
                "unsigned tokens (alg none) are never accepted",
            )
        if "crit" in header:
            raise TokenRejected(TokenRejection.MALFORMED, "unsupported critical header (crit)")
        issuer = claims.get("iss")
        policy = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if policy is None:
            raise TokenRejected(
                TokenRejection.UNKNOWN_ISSUER, f"issuer {_show(issuer)} is not trusted"
            )
        if alg not in policy.algorithms:
            raise TokenRejected(
                TokenRejection.ALGORITHM_NOT_ALLOWED,
                f"algorithm {_show(alg)} is not allowed for issuer {policy.issuer!r} "
                f"(allowed: {', '.join(policy.algorithms)})",
            )
        key = self._key(policy, alg, header.get("kid"), now)
        try:
            self._jws.decode_complete(token, key=key, algorithms=[alg])
        except InvalidSignatureError:
            raise TokenRejected(
                TokenRejection.INVALID_SIGNATURE, "the signature does not verify"
            ) from None
        except PyJWTError as exc:
            raise TokenRejected(
                TokenRejection.INVALID_SIGNATURE, f"the signature cannot be verified: {exc}"
            ) from None
        return self._check_claims(policy, claims, now)

    def _key(self, policy: IssuerPolicy, alg: str, kid: Any, now: float) -> Any:
        if alg in HMAC_ALGORITHMS:
            assert policy.hmac_secret is not None  # IssuerPolicy checks it
            return policy.hmac_secret
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected(TokenRejection.MALFORMED, "the kid header is not a string")
        assert policy.key_set is not None
        lookup = policy.key_set.lookup(kid, now)
        if lookup.key is None:
            raise TokenRejected(
                TokenRejection.UNKNOWN_KEY,
                f"no key with kid {_show(kid)} for issuer {policy.issuer!r}",
                refresh_issuer=policy.issuer if lookup.refresh_needed else None,
            )
        if not lookup.key.supports(alg):
            raise TokenRejected(
                TokenRejection.KEY_MISMATCH,
                f"key {_show(kid)} of issuer {policy.issuer!r} cannot verify {alg} signatures",
            )
        return lookup.key.key

    def _check_claims(
        self, policy: IssuerPolicy, claims: dict[str, Any], now: float
    ) -> ValidatedToken:
        leeway = policy.leeway_s
        exp = claims.get("exp")
        if exp is None:
            raise TokenRejected(TokenRejection.MISSING_CLAIM, "the token has no exp claim")
        if not _is_number(exp):
            raise TokenRejected(TokenRejection.INVALID_CLAIM, "exp is not a number")
        if now >= exp + leeway:
            raise TokenRejected(
                TokenRejection.EXPIRED, f"the token expired at {exp} ({now - exp:.0f} s ago)"
            )
        for name, reason in (
            ("nbf", TokenRejection.NOT_YET_VALID),
            ("iat", TokenRejection.ISSUED_IN_FUTURE),
        ):
            value = claims.get(name)
            if value is None:
                continue
            if not _is_number(value):
                raise TokenRejected(TokenRejection.INVALID_CLAIM, f"{name} is not a number")
            if value > now + leeway:
                raise TokenRejected(reason, f"{name} {value} is {value - now:.0f} s in the future")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise TokenRejected(TokenRejection.WRONG_AUDIENCE, "the token has no valid aud claim")
        if not set(audiences).intersection(policy.audiences):
            raise TokenRejected(
                TokenRejection.WRONG_AUDIENCE,
                f"audience {_show(audience)} is not one of {', '.join(policy.audiences)}",
            )
        for name in policy.required_claims:
            if claims.get(name) is None:
                raise TokenRejected(
                    TokenRejection.MISSING_CLAIM, f"required claim {name!r} is missing"
                )
        principal = claims.get(policy.principal_claim)
        if principal is None:
            raise TokenRejected(
                TokenRejection.MISSING_CLAIM,
                f"principal claim {policy.principal_claim!r} is missing",
            )
        if not isinstance(principal, str) or not principal:
            raise TokenRejected(
                TokenRejection.INVALID_CLAIM,
                f"principal claim {policy.principal_claim!r} is not a non-empty string",
            )
        return ValidatedToken(
            principal_name=policy.principal_prefix + principal,
            issuer=policy.issuer,
            expires_at=float(exp),
            claims=claims,
            namespace=policy.principal_prefix,
        )
