"""Authentication policies: pure decisions, no sockets, no Trio, no clocks.

Every function that depends on time takes ``now`` (wall-clock seconds since the
epoch), so tests are deterministic. The runtime (``gateway/session.py``) drives
them:

* :class:`ListenerAuthenticator` (one per listener) answers SaslHandshake and
  creates a :class:`SaslServerSession` per exchange; sessions return
  :class:`SaslResult` or raise :class:`AuthenticationFailed`
  (OAUTHBEARER may raise :class:`KeyRefreshNeeded`: refresh the JWKS, retry);
* :func:`sasl_client_for` authenticates the gateway to the brokers;
* :func:`authentication_event` builds the audit event;
* :func:`session_lifetime_ms` / :func:`session_expired` implement KIP-368;
* :func:`map_principal` / :func:`subject_dn_from_der` give mTLS principals.

Modules: ``principal``, ``errors``, ``base`` (interfaces), ``passwords``,
``plain``, ``scram``, ``oauthbearer``, ``jwt_validation``, ``jwks``,
``oauth_client``, ``mtls``, ``tls``, ``lifetime``, ``audit``, ``sasl``.
"""

from __future__ import annotations

from policies.auth.audit import AuthenticationEvent, authentication_event
from policies.auth.base import (
    SaslClientError,
    SaslClientSession,
    SaslResult,
    SaslServerSession,
    check_token_size,
)
from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.jwks import InvalidJwks, JwksKeySet, KeyLookup
from policies.auth.jwt_validation import (
    IssuerPolicy,
    JwtValidator,
    TokenRejected,
    TokenRejection,
    ValidatedToken,
)
from policies.auth.lifetime import check_reauthentication, session_expired, session_lifetime_ms
from policies.auth.mtls import (
    InvalidMappingRule,
    NoMatchingRule,
    map_principal,
    parse_mapping_rules,
    subject_dn_from_der,
    subject_dn_from_peercert,
    tls_principal,
)
from policies.auth.oauthbearer import KeyRefreshNeeded, oauthbearer_error_challenge
from policies.auth.passwords import InvalidPasswordHash, hash_password, verify_password
from policies.auth.plain import parse_plain_token, plain_client_token
from policies.auth.principal import ANONYMOUS, Mechanism, Principal, SaslMechanism
from policies.auth.sasl import (
    PRE_AUTHENTICATION_API_KEYS,
    ListenerAuthenticator,
    UnsupportedMechanism,
    allowed_before_authentication,
    passthrough_principal,
    sasl_client_for,
)
from policies.auth.scram import ScramCredential, derive_scram_credential

__all__ = [
    "ANONYMOUS",
    "PRE_AUTHENTICATION_API_KEYS",
    "AuthenticationEvent",
    "AuthenticationFailed",
    "FailureReason",
    "InvalidJwks",
    "InvalidMappingRule",
    "InvalidPasswordHash",
    "IssuerPolicy",
    "JwksKeySet",
    "JwtValidator",
    "KeyLookup",
    "KeyRefreshNeeded",
    "ListenerAuthenticator",
    "Mechanism",
    "NoMatchingRule",
    "Principal",
    "SaslClientError",
    "SaslClientSession",
    "SaslMechanism",
    "SaslResult",
    "SaslServerSession",
    "ScramCredential",
    "TokenRejected",
    "TokenRejection",
    "UnsupportedMechanism",
    "ValidatedToken",
    "allowed_before_authentication",
    "authentication_event",
    "check_reauthentication",
    "check_token_size",
    "derive_scram_credential",
    "hash_password",
    "map_principal",
    "oauthbearer_error_challenge",
    "parse_mapping_rules",
    "parse_plain_token",
    "passthrough_principal",
    "plain_client_token",
    "sasl_client_for",
    "session_expired",
    "session_lifetime_ms",
    "subject_dn_from_der",
    "subject_dn_from_peercert",
    "tls_principal",
    "verify_password",
]
