"""One listener's authentication policy, and the gateway's upstream SASL client.

The runtime builds a :class:`ListenerAuthenticator` per listener when the
configuration is loaded (and a new one on reload), then per connection:

* SaslHandshake: answer with :attr:`ListenerAuthenticator.mechanisms`; for the
  requested one take :meth:`ListenerAuthenticator.server_session` (an unknown
  mechanism raises :class:`UnsupportedMechanism`, whose ``enabled`` the
  handshake response lists);
* SaslAuthenticate: ``session.evaluate(auth_bytes, time.time())`` until the
  result is ``completed``; on :class:`~policies.auth.errors.AuthenticationFailed`
  wait ``failed_authentication_delay_ms``, answer with ``client_message``, audit
  and close; on :class:`~policies.auth.oauthbearer.KeyRefreshNeeded` refresh the
  issuer's JWKS and evaluate the same token again;
* without SASL (no mechanisms): :meth:`ListenerAuthenticator.principal_without_sasl`
  gives the mTLS principal or ``User:ANONYMOUS``;
* before authentication only :data:`PRE_AUTHENTICATION_API_KEYS` are accepted.

For the upstream side, :func:`sasl_client_for` builds the client session for
``upstream.sasl``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from policies.auth.base import SaslClientSession, SaslResult, SaslServerSession, check_token_size
from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.jwks import JwksKeySet
from policies.auth.jwt_validation import JwtValidator
from policies.auth.mtls import MappingRule, parse_mapping_rules, tls_principal
from policies.auth.oauthbearer import (
    OAuthBearerClientSession,
    OAuthBearerServerSession,
    parse_oauthbearer_client_message,
)
from policies.auth.passwords import PasswordHash, dummy_password_hash
from policies.auth.plain import PlainClientSession, PlainServerSession, parse_plain_token
from policies.auth.principal import ANONYMOUS, SASL_MECHANISMS, Principal
from policies.auth.scram import (
    SCRAM_MECHANISMS,
    ClientFirstMessage,
    ScramClientSession,
    ScramCredential,
    ScramMechanism,
    ScramServerSession,
)

if TYPE_CHECKING:
    from policies.config import AuthenticationConfig, ServerTlsConfig, UpstreamSaslConfig

__all__ = [
    "PRE_AUTHENTICATION_API_KEYS",
    "ListenerAuthenticator",
    "UnsupportedMechanism",
    "allowed_before_authentication",
    "passthrough_principal",
    "sasl_client_for",
]

#: ApiVersions (18), SaslHandshake (17) and SaslAuthenticate (36): the only requests
#: Kafka accepts before a SASL listener has authenticated the connection.
PRE_AUTHENTICATION_API_KEYS: Final = frozenset({18, 17, 36})


def allowed_before_authentication(api_key: int) -> bool:
    """True for the requests a client may send before authenticating (others close it)."""
    return api_key in PRE_AUTHENTICATION_API_KEYS


class UnsupportedMechanism(AuthenticationFailed):
    """The client asked for a mechanism this listener does not enable.

    The SaslHandshake response carries ``UNSUPPORTED_SASL_MECHANISM`` and ``enabled``.
    """

    def __init__(self, mechanism: str, enabled: tuple[str, ...]) -> None:
        super().__init__(
            FailureReason.UNSUPPORTED_MECHANISM,
            f"mechanism {mechanism[:40]!r} is not enabled "
            f"(enabled: {', '.join(enabled) or 'none'})",
            client_message=f"Unsupported SASL mechanism {mechanism[:40]}",
            mechanism=mechanism[:40],
        )
        self.enabled = enabled


class _SizeLimited:
    """Wraps a server session with the ``max_token_bytes`` check."""

    def __init__(self, inner: SaslServerSession, max_token_bytes: int) -> None:
        self._inner = inner
        self._max = max_token_bytes

    @property
    def mechanism(self) -> str:
        return self._inner.mechanism

    @property
    def cpu_bound(self) -> bool:
        return self._inner.cpu_bound

    def evaluate(self, token: bytes, now: float) -> SaslResult:
        check_token_size(len(token), self._max, mechanism=self._inner.mechanism)
        return self._inner.evaluate(token, now)


def _most_common(values: list[int], default: int) -> int:
    return Counter(values).most_common(1)[0][0] if values else default


class ListenerAuthenticator:
    """The authentication policy of one listener, built from its configuration.

    ``now`` (wall-clock seconds) is when OAUTHBEARER ``jwks_file`` key sets are
    loaded. ``key_sets`` (by issuer) carries the JWKS key sets of the previous
    authenticator over a configuration reload, so fetched keys are kept.
    """

    def __init__(
        self,
        config: AuthenticationConfig,
        *,
        now: float,
        tls: ServerTlsConfig | None = None,
        key_sets: Mapping[str, JwksKeySet] | None = None,
    ) -> None:
        self.config = config
        self._tls = tls
        self._mapping_rules: tuple[MappingRule, ...] = (
            parse_mapping_rules(tls.principal_mapping_rules) if tls is not None else ()
        )
        self._mechanisms: tuple[str, ...] = tuple(config.mechanisms)
        self._users: dict[str, PasswordHash] = {
            user: PasswordHash.parse(stored) for user, stored in config.plain_users().items()
        }
        hashes = list(self._users.values())
        like = hashes[0] if hashes else None
        if hashes:
            common = Counter((h.n, h.r, h.p, len(h.digest)) for h in hashes).most_common(1)[0][0]
            like = next(h for h in hashes if (h.n, h.r, h.p, len(h.digest)) == common)
        self._dummy_hash = dummy_password_hash(like)
        self._scram: dict[str, dict[str, ScramCredential]] = {
            mechanism: dict(config.scram_credentials_for(mechanism))
            for mechanism in SCRAM_MECHANISMS
        }
        digest = hashlib.sha256(b"kafka-gateway/scram-unknown-user\0")
        for user, texts in sorted(config.scram_credentials.items()):
            digest.update(user.encode() + b"\0" + "\0".join(sorted(texts)).encode() + b"\0")
        self._unknown_user_secret = digest.digest()
        self.jwt_validator: JwtValidator | None = None
        if config.oauthbearer is not None and not config.passthrough:
            self.jwt_validator = JwtValidator.from_config(config.oauthbearer, now, key_sets)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The enabled SASL mechanisms, for the SaslHandshake response (empty: no SASL)."""
        return self._mechanisms

    @property
    def sasl_required(self) -> bool:
        """True if clients must authenticate with SASL before anything else."""
        return bool(self._mechanisms)

    @property
    def passthrough(self) -> bool:
        """True if the client's SASL exchange is relayed to the broker.

        See :func:`passthrough_principal`.
        """
        return self.config.passthrough

    @property
    def failed_authentication_delay_s(self) -> float:
        """How long to wait before answering a failed authentication."""
        return self.config.failed_authentication_delay_ms / 1000

    @property
    def max_token_bytes(self) -> int:
        return self.config.max_token_bytes

    def server_session(self, mechanism: str) -> SaslServerSession:
        """A fresh server session for ``mechanism`` (raises :class:`UnsupportedMechanism`)."""
        if mechanism not in self._mechanisms:
            raise UnsupportedMechanism(mechanism, self._mechanisms)
        if self.config.passthrough:
            raise ValueError("a passthrough listener relays SASL to the broker; it has no sessions")
        max_lifetime = self.config.max_session_lifetime_ms
        session: SaslServerSession
        if mechanism == "PLAIN":
            session = PlainServerSession(
                self._users.get, max_session_lifetime_ms=max_lifetime, dummy_hash=self._dummy_hash
            )
        elif mechanism in SCRAM_MECHANISMS:
            credentials = self._scram[mechanism]
            scram: ScramMechanism = (
                "SCRAM-SHA-256" if mechanism == "SCRAM-SHA-256" else "SCRAM-SHA-512"
            )
            session = ScramServerSession(
                scram,
                credentials.get,
                unknown_user_secret=self._unknown_user_secret,
                fake_iterations=_most_common([c.iterations for c in credentials.values()], 4096),
                fake_salt_bytes=_most_common([len(c.salt) for c in credentials.values()], 24),
                max_session_lifetime_ms=max_lifetime,
            )
        elif mechanism == "OAUTHBEARER":
            assert self.jwt_validator is not None  # the config requires issuers
            session = OAuthBearerServerSession(
                self.jwt_validator, max_session_lifetime_ms=max_lifetime
            )
        else:  # pragma: no cover - the config only allows the mechanisms above
            raise UnsupportedMechanism(mechanism, self._mechanisms)
        return _SizeLimited(session, self.config.max_token_bytes)

    def principal_without_sasl(self, peer_subject_dn: str | None) -> Principal:
        """The principal of a connection on a listener without SASL mechanisms.

        With TLS client authentication and a client certificate (its RFC 2253
        subject, see :func:`~policies.auth.mtls.subject_dn_from_der`), the mapped
        ``MTLS`` principal (raises :class:`~policies.auth.mtls.NoMatchingRule`);
        otherwise ``User:ANONYMOUS``.
        """
        if self._tls is not None and self._tls.client_auth != "none" and peer_subject_dn:
            return tls_principal(peer_subject_dn, self._mapping_rules)
        return ANONYMOUS


def sasl_client_for(
    config: UpstreamSaslConfig, *, oauth_token: str | None = None
) -> SaslClientSession:
    """A client session for the gateway's own credentials (``upstream.sasl``).

    OAUTHBEARER needs ``oauth_token``, fetched by the runtime from the token
    endpoint (see :mod:`policies.auth.oauth_client`).
    """
    mechanism = config.mechanism
    if mechanism == "OAUTHBEARER":
        if oauth_token is None:
            raise ValueError("OAUTHBEARER needs a token from the token endpoint")
        return OAuthBearerClientSession(oauth_token)
    if config.username is None or config.password is None:
        raise ValueError(f"{mechanism} needs a username and a password")
    password = config.password.get_secret_value()
    if mechanism == "PLAIN":
        return PlainClientSession(config.username, password)
    return ScramClientSession(mechanism, config.username, password)


def passthrough_principal(mechanism: str, first_token: bytes) -> Principal | None:
    """The name a client claims in its first SASL message (passthrough mode).

    PLAIN: the user name (the password is dropped); SCRAM: the ``n=`` user;
    OAUTHBEARER: the JWT's ``sub``, read without verifying the signature. The
    result is marked ``authenticated_by="upstream"`` and is only meaningful once the
    broker accepted the exchange. ``None`` if the message cannot be parsed.
    """
    name: str | None = None
    try:
        if mechanism == "PLAIN":
            name = parse_plain_token(first_token).username
        elif mechanism in SCRAM_MECHANISMS:
            name = ClientFirstMessage.parse(first_token.decode("utf-8")).username
        elif mechanism == "OAUTHBEARER":
            token = parse_oauthbearer_client_message(first_token).token
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            sub = claims.get("sub") if isinstance(claims, dict) else None
            name = sub if isinstance(sub, str) and sub else None
    except (AuthenticationFailed, ValueError, IndexError, UnicodeDecodeError):
        return None
    if name is None or mechanism not in SASL_MECHANISMS:
        return None
    return Principal(name=name, mechanism=mechanism, authenticated_by="upstream")
