"""Authentication failures: one exception with a stable reason code for audits and metrics."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AuthenticationFailed", "FailureReason"]


class FailureReason(StrEnum):
    """Why an authentication failed: a stable code for the audit log and metrics.

    The client never sees it (it could tell an unknown user from a wrong password);
    it gets :attr:`AuthenticationFailed.client_message` instead.
    """

    #: The SASL message could not be parsed (bad framing, encoding, missing fields).
    MALFORMED_MESSAGE = "malformed_message"
    #: A message arrived in a state that does not expect one (e.g. after completion).
    ILLEGAL_STATE = "illegal_state"
    #: The SASL token is larger than ``authentication.max_token_bytes``.
    TOKEN_TOO_LARGE = "token_too_large"
    #: The mechanism is not enabled on this listener.
    UNSUPPORTED_MECHANISM = "unsupported_mechanism"
    #: No such user (PLAIN, SCRAM).
    UNKNOWN_USER = "unknown_user"
    #: PLAIN: the password does not match the stored hash.
    WRONG_PASSWORD = "wrong_password"
    #: SCRAM: the client proof does not match the stored key.
    WRONG_PROOF = "wrong_proof"
    #: SCRAM: the nonce of the client-final message is not the one of this exchange
    #: (a replayed or forged message).
    NONCE_MISMATCH = "nonce_mismatch"
    #: SCRAM: the channel binding (``c=``) does not match the GS2 header sent first.
    CHANNEL_BINDING_MISMATCH = "channel_binding_mismatch"
    #: The client asked for something unsupported: channel binding, a mandatory
    #: SCRAM extension (``m=``), a delegation token (``tokenauth``).
    UNSUPPORTED_FEATURE = "unsupported_feature"
    #: The authorization id differs from the authenticated identity (Kafka's rule).
    AUTHZID_MISMATCH = "authzid_mismatch"
    #: OAUTHBEARER: the token was rejected (see the detail for the exact reason).
    INVALID_TOKEN = "invalid_token"
    #: KIP-368 re-authentication tried to change the principal or the mechanism.
    REAUTHENTICATION_MISMATCH = "reauthentication_mismatch"
    #: mTLS: no ``principal_mapping_rules`` rule matched the certificate subject.
    NO_MATCHING_RULE = "no_matching_rule"
    #: Passthrough: the broker refused the client's own SASL exchange.
    REJECTED_BY_BROKER = "rejected_by_broker"


class AuthenticationFailed(Exception):
    """An authentication attempt failed; the connection must be answered and closed.

    * ``reason``: stable code for the audit event (:class:`FailureReason`);
    * ``detail``: human-readable explanation for the audit log. It never contains a
      password, token, proof or any other secret the client sent;
    * ``client_message``: the ``error_message`` of the SaslAuthenticate response. It
      is the same for an unknown user and a wrong password;
    * ``user``: the name the client claimed, when known (for the audit event);
    * ``mechanism``: the SASL mechanism, when known.
    """

    def __init__(
        self,
        reason: FailureReason,
        detail: str,
        *,
        client_message: str = "Authentication failed",
        user: str | None = None,
        mechanism: str | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.client_message = client_message
        self.user = user
        self.mechanism = mechanism
