"""The Kafka error codes the gateway itself puts into responses or reacts to.

A small hand-kept table instead of kio's 120-member enum: the codecs compare and
emit plain ``int`` values, and a named constant per code the gateway really uses
makes grepping for "who answers SASL_AUTHENTICATION_FAILED" easy. The unit tests
check every value against kio's ``ErrorCode`` (generated from Kafka's sources).

Reference: https://kafka.apache.org/protocol#protocol_error_codes
"""

from __future__ import annotations

from typing import Final

UNKNOWN_SERVER_ERROR: Final = -1
NONE: Final = 0
CORRUPT_MESSAGE: Final = 2
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
LEADER_NOT_AVAILABLE: Final = 5
NOT_LEADER_OR_FOLLOWER: Final = 6
REQUEST_TIMED_OUT: Final = 7
BROKER_NOT_AVAILABLE: Final = 8
NETWORK_EXCEPTION: Final = 13
COORDINATOR_NOT_AVAILABLE: Final = 15
NOT_COORDINATOR: Final = 16
TOPIC_AUTHORIZATION_FAILED: Final = 29
GROUP_AUTHORIZATION_FAILED: Final = 30
CLUSTER_AUTHORIZATION_FAILED: Final = 31
UNSUPPORTED_SASL_MECHANISM: Final = 33
ILLEGAL_SASL_STATE: Final = 34
UNSUPPORTED_VERSION: Final = 35
INVALID_REQUEST: Final = 42
POLICY_VIOLATION: Final = 44
TRANSACTIONAL_ID_AUTHORIZATION_FAILED: Final = 53
SECURITY_DISABLED: Final = 54
SASL_AUTHENTICATION_FAILED: Final = 58
DELEGATION_TOKEN_AUTHORIZATION_FAILED: Final = 65
THROTTLING_QUOTA_EXCEEDED: Final = 89

#: Codes that end an authentication attempt (the broker closes the connection after them).
AUTHENTICATION_ERRORS: Final = frozenset(
    {UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED}
)

ERROR_NAMES: Final[dict[int, str]] = {
    value: name
    for name, value in dict(globals()).items()
    if name.isupper() and isinstance(value, int) and not isinstance(value, bool)
}
"""``code -> "SASL_AUTHENTICATION_FAILED"``, for log lines and error messages."""


def error_name(code: int) -> str:
    """Kafka's upper-case name of `code`, or ``"ERROR_<code>"`` for one not in the table."""
    return ERROR_NAMES.get(code, f"ERROR_{code}")
