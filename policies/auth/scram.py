"""SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka speaks them.

Stored credentials (:class:`ScramCredential`) hold the salt, iteration count,
StoredKey and ServerKey, never the password; their text form, used in the YAML
file and printed by ``kafka-gateway scram-credential``, is::

    SCRAM-SHA-256:iterations=4096,salt=<b64>,stored_key=<b64>,server_key=<b64>

The exchange::

    client-first   n,,n=alice,r=<client nonce>
    server-first   r=<client nonce><server nonce>,s=<salt b64>,i=<iterations>
    client-final   c=biws,r=<full nonce>,p=<proof b64>
    server-final   v=<server signature b64>

Like Kafka: no channel binding (``c=`` must encode the GS2 header the client sent,
``biws`` for ``n,,``), no SASLprep of names or passwords, iterations between 4096
and 16384, and the authorization id must be empty or the user name. Kafka's
``tokenauth=true`` extension (delegation tokens) is rejected; other extensions are
ignored.

An unknown user gets a server-first message with a salt and iteration count
derived from the user name and a server secret, so the exchange looks the same
as for a real user and fails only at the proof check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from policies.auth.base import SaslClientError, SaslResult
from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.lifetime import session_lifetime_ms
from policies.auth.principal import Principal

__all__ = [
    "DEFAULT_ITERATIONS",
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "ClientFinalMessage",
    "ClientFirstMessage",
    "InvalidScramCredential",
    "ScramClientSession",
    "ScramCredential",
    "ScramMechanism",
    "ScramServerSession",
    "ServerFirstMessage",
    "derive_scram_credential",
    "salted_password",
]

ScramMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]
SCRAM_MECHANISMS: Final[tuple[ScramMechanism, ...]] = get_args(ScramMechanism)

_HASH_NAMES: Final[dict[str, str]] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}

#: Kafka's bounds for both SCRAM mechanisms (``ScramMechanism.minIterations`` / ``maxIterations``).
MIN_ITERATIONS: Final = 4096
MAX_ITERATIONS: Final = 16384
DEFAULT_ITERATIONS: Final = 4096
SALT_BYTES: Final = 24
#: Bounds on what a broker may send the gateway's SCRAM client: a salt is a few
#: dozen bytes (Kafka: 24-ish), a nonce a few dozen characters. Larger ones are
#: refused before any PBKDF2 work or allocation proportional to them.
MAX_SERVER_SALT_BYTES: Final = 256
MAX_SERVER_NONCE_CHARS: Final = 512
MAX_SERVER_FIRST_BYTES: Final = 2048

#: What a client is told after any failed SCRAM exchange (Kafka's wording): the
#: same for an unknown user and a wrong password.
_CLIENT_FAILURE: Final = (
    "Authentication failed during authentication due to invalid credentials with SASL mechanism {}"
)

# printable ASCII except ',' (RFC 5802 "printable")
_NONCE_RE: Final = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_EXTENSION_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9]*)=([^,]*)")


def _hash_name(mechanism: str) -> str:
    try:
        return _HASH_NAMES[mechanism]
    except KeyError:
        raise ValueError(f"not a SCRAM mechanism: {mechanism!r}") from None


def _h(mechanism: str, data: bytes) -> bytes:
    return hashlib.new(_hash_name(mechanism), data).digest()


def _hmac(mechanism: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, _hash_name(mechanism)).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def salted_password(password: str, salt: bytes, iterations: int, mechanism: str) -> bytes:
    """RFC 5802 ``SaltedPassword := Hi(password, salt, i)`` (PBKDF2-HMAC)."""
    return hashlib.pbkdf2_hmac(_hash_name(mechanism), password.encode("utf-8"), salt, iterations)


def _escape_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _unescape_saslname(text: str) -> str:
    if re.search(r"=(?!2C|3D)", text):
        raise ValueError("invalid '=' escape in a SCRAM name")
    return text.replace("=2C", ",").replace("=3D", "=")


# --------------------------------------------------------------------------------------
# stored credentials


class InvalidScramCredential(ValueError):
    """A stored SCRAM credential string is malformed (a configuration error)."""


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the server stores for one user and mechanism (RFC 5802 section 3)."""

    mechanism: ScramMechanism
    salt: bytes = field(repr=False)
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> ScramCredential:
        """Parse ``SCRAM-SHA-256:iterations=4096,salt=..,stored_key=..,server_key=..``."""
        mechanism, sep, body = text.strip().partition(":")
        if not sep or mechanism not in _HASH_NAMES:
            raise InvalidScramCredential(
                "expected 'SCRAM-SHA-256:iterations=...,salt=...,stored_key=...,server_key=...' "
                "or SCRAM-SHA-512 (run: kafka-gateway scram-credential)"
            )
        fields: dict[str, str] = {}
        for item in body.split(","):
            key, eq, value = item.strip().partition("=")
            if not eq or key not in {"iterations", "salt", "stored_key", "server_key"}:
                raise InvalidScramCredential(f"unexpected item {key!r} in a SCRAM credential")
            if key in fields:
                raise InvalidScramCredential(f"{key!r} appears twice in a SCRAM credential")
            fields[key] = value.strip()
        missing = {"iterations", "salt", "stored_key", "server_key"} - set(fields)
        if missing:
            raise InvalidScramCredential(f"SCRAM credential without {', '.join(sorted(missing))}")
        if not fields["iterations"].isdigit():
            raise InvalidScramCredential("iterations must be an integer")
        decoded: dict[str, bytes] = {}
        for key in ("salt", "stored_key", "server_key"):
            try:
                decoded[key] = _unb64(fields[key])
            except (binascii.Error, ValueError):
                raise InvalidScramCredential(f"{key} is not valid base64") from None
        return cls.create(
            mechanism,  # type: ignore[arg-type]  # checked against _HASH_NAMES above
            salt=decoded["salt"],
            iterations=int(fields["iterations"]),
            stored_key=decoded["stored_key"],
            server_key=decoded["server_key"],
        )

    @classmethod
    def create(
        cls,
        mechanism: ScramMechanism,
        *,
        salt: bytes,
        iterations: int,
        stored_key: bytes,
        server_key: bytes,
    ) -> ScramCredential:
        """Build a credential, checking iterations and key sizes."""
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise InvalidScramCredential(
                f"iterations must be in {MIN_ITERATIONS}..{MAX_ITERATIONS} (Kafka's bounds), "
                f"got {iterations}"
            )
        size = hashlib.new(_hash_name(mechanism)).digest_size
        if len(stored_key) != size or len(server_key) != size:
            raise InvalidScramCredential(f"{mechanism} keys must be {size} bytes long")
        if not salt:
            raise InvalidScramCredential("the salt must not be empty")
        return cls(mechanism, salt, iterations, stored_key, server_key)

    def __str__(self) -> str:
        return (
            f"{self.mechanism}:iterations={self.iterations},salt={_b64(self.salt)},"
            f"stored_key={_b64(self.stored_key)},server_key={_b64(self.server_key)}"
        )


def derive_scram_credential(
    password: str,
    mechanism: ScramMechanism,
    iterations: int = DEFAULT_ITERATIONS,
    salt: bytes | None = None,
) -> ScramCredential:
    """The stored credential for ``password`` (``salt`` defaults to 24 random bytes)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    salted = salted_password(password, salt, iterations, mechanism)
    client_key = _hmac(mechanism, salted, b"Client Key")
    return ScramCredential.create(
        mechanism,
        salt=salt,
        iterations=iterations,
        stored_key=_h(mechanism, client_key),
        server_key=_hmac(mechanism, salted, b"Server Key"),
    )


# --------------------------------------------------------------------------------------
# messages


def _malformed(detail: str, mechanism: str, user: str | None = None) -> AuthenticationFailed:
    return AuthenticationFailed(
        FailureReason.MALFORMED_MESSAGE,
        detail,
        client_message=f"Authentication failed: invalid {mechanism} message",
        user=user,
        mechanism=mechanism,
    )


@dataclass(frozen=True, slots=True)
class ClientFirstMessage:
    """``gs2-header client-first-message-bare`` (RFC 5802 section 7)."""

    gs2_header: str
    authzid: str | None
    username: str
    nonce: str
    extensions: dict[str, str]
    bare: str

    @classmethod
    def parse(cls, text: str) -> ClientFirstMessage:
        """Parse; ``ValueError`` says what is wrong (without echoing the message)."""
        flag, sep, rest = text.partition(",")
        if not sep:
            raise ValueError("no GS2 header")
        if flag.startswith("p="):
            raise _ChannelBindingRequested
        if flag not in {"n", "y"}:
            raise ValueError("invalid GS2 channel-binding flag")
        authz, sep, bare = rest.partition(",")
        if not sep:
            raise ValueError("no GS2 header")
        authzid: str | None = None
        if authz:
            if not authz.startswith("a="):
                raise ValueError("invalid GS2 authzid")
            authzid = _unescape_saslname(authz[2:])
        parts = bare.split(",")
        if parts and parts[0].startswith("m="):
            raise _MandatoryExtension
        if len(parts) < 2 or not parts[0].startswith("n=") or not parts[1].startswith("r="):
            raise ValueError("expected n=<user>,r=<nonce>")
        username = _unescape_saslname(parts[0][2:])
        if not username:
            raise ValueError("empty user name")
        nonce = parts[1][2:]
        if _NONCE_RE.fullmatch(nonce) is None:
            raise ValueError("invalid client nonce")
        extensions: dict[str, str] = {}
        for part in parts[2:]:
            match = _EXTENSION_RE.fullmatch(part)
            if match is None:
                raise ValueError("invalid extension")
            extensions[match.group(1)] = match.group(2)
        return cls(f"{flag},{authz},", authzid, username, nonce, extensions, bare)


class _ChannelBindingRequested(ValueError):
    pass


class _MandatoryExtension(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ServerFirstMessage:
    """``r=<nonce>,s=<salt>,i=<iterations>``."""

    nonce: str
    salt: bytes
    iterations: int

    @classmethod
    def parse(cls, text: str) -> ServerFirstMessage:
        parts = text.split(",")
        if parts and parts[0].startswith("m="):
            raise ValueError("the server requires an unsupported SCRAM extension")
        if (
            len(parts) < 3
            or not parts[0].startswith("r=")
            or not parts[1].startswith("s=")
            or not parts[2].startswith("i=")
        ):
            raise ValueError("expected r=<nonce>,s=<salt>,i=<iterations>")
        count = parts[2][2:]
        if not (count.isascii() and count.isdigit()) or len(count) > 10:
            raise ValueError("invalid iteration count")
        try:
            salt = _unb64(parts[1][2:])
        except (binascii.Error, ValueError):
            raise ValueError("the salt is not valid base64") from None
        return cls(parts[0][2:], salt, int(count))

    def __str__(self) -> str:
        return f"r={self.nonce},s={_b64(self.salt)},i={self.iterations}"


@dataclass(frozen=True, slots=True)
class ClientFinalMessage:
    """``c=<channel binding>,r=<nonce>[,extensions],p=<proof>``."""

    channel_binding: bytes
    nonce: str
    proof: bytes = field(repr=False)
    without_proof: str

    @classmethod
    def parse(cls, text: str) -> ClientFinalMessage:
        without_proof, sep, proof = text.rpartition(",p=")
        if not sep:
            raise ValueError("no proof (p=)")
        parts = without_proof.split(",")
        if len(parts) < 2 or not parts[0].startswith("c=") or not parts[1].startswith("r="):
            raise ValueError("expected c=<binding>,r=<nonce>,...,p=<proof>")
        try:
            binding = _unb64(parts[0][2:])
            proof_bytes = _unb64(proof)
        except (binascii.Error, ValueError):
            raise ValueError("invalid base64") from None
        return cls(binding, parts[1][2:], proof_bytes, without_proof)


def _auth_message(
    client_first_bare: str, server_first: str, client_final_without_proof: str
) -> bytes:
    return f"{client_first_bare},{server_first},{client_final_without_proof}".encode()


# --------------------------------------------------------------------------------------
# server


def _default_nonce() -> str:
    return secrets.token_urlsafe(24)


class ScramServerSession:
    """The server side of one SCRAM exchange (see :class:`~policies.auth.base.SaslServerSession`).

    ``lookup(user)`` returns the user's credential for this mechanism or ``None``.
    ``unknown_user_secret`` seeds the fake salt for unknown users; it must be the
    same on every gateway replica and across restarts (the listener derives it from
    the configured credentials), or probing for user names would see it change.
    ``fake_iterations`` and ``fake_salt_bytes`` should look like the real ones.
    """

    cpu_bound = False

    def __init__(
        self,
        mechanism: ScramMechanism,
        lookup: Callable[[str], ScramCredential | None],
        *,
        unknown_user_secret: bytes,
        fake_iterations: int = DEFAULT_ITERATIONS,
        fake_salt_bytes: int = SALT_BYTES,
        max_session_lifetime_ms: int | None = None,
        nonce_factory: Callable[[], str] = _default_nonce,
    ) -> None:
        _hash_name(mechanism)
        self._mechanism: ScramMechanism = mechanism
        self._lookup = lookup
        self._secret = unknown_user_secret
        self._fake_iterations = fake_iterations
        self._fake_salt_bytes = fake_salt_bytes
        self._max_session_lifetime_ms = max_session_lifetime_ms
        self._nonce_factory = nonce_factory
        self._state: Literal["client_first", "client_final", "done"] = "client_first"
        self._client_first: ClientFirstMessage | None = None
        self._server_first = ""
        self._nonce = ""
        self._credential: ScramCredential | None = None
        self._user_known = False

    @property
    def mechanism(self) -> str:
        return self._mechanism

    def evaluate(self, token: bytes, now: float) -> SaslResult:
        state, self._state = self._state, "done"  # a failure below leaves the session done
        if state == "client_first":
            challenge = self._client_first_step(token)
            self._state = "client_final"
            return SaslResult(challenge)
        if state == "client_final":
            return self._client_final_step(token, now)
        user = self._client_first.username if self._client_first else None
        raise AuthenticationFailed(
            FailureReason.ILLEGAL_STATE,
            "SCRAM message after the exchange ended",
            client_message="Authentication failed: unexpected SCRAM message",
            user=user,
            mechanism=self._mechanism,
        )

    def _client_first_step(self, token: bytes) -> bytes:
        mechanism = self._mechanism
        try:
            first = ClientFirstMessage.parse(token.decode("utf-8"))
        except _ChannelBindingRequested:
            raise AuthenticationFailed(
                FailureReason.UNSUPPORTED_FEATURE,
                "client requested channel binding, which the gateway does not support",
                client_message="Authentication failed: e=channel-binding-not-supported",
                mechanism=mechanism,
            ) from None
        except _MandatoryExtension:
            raise AuthenticationFailed(
                FailureReason.UNSUPPORTED_FEATURE,
                "client-first message with a mandatory extension (m=)",
                client_message="Authentication failed: e=extensions-not-supported",
                mechanism=mechanism,
            ) from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise _malformed(f"invalid SCRAM client-first message: {exc}", mechanism) from None
        if first.authzid and first.authzid != first.username:
            raise AuthenticationFailed(
                FailureReason.AUTHZID_MISMATCH,
                "authorization id differs from the user name",
                client_message=(
                    "Authentication failed: Client requested an authorization id that is "
                    "different from username"
                ),
                user=first.username,
                mechanism=mechanism,
            )
        if first.extensions.get("tokenauth", "").lower() == "true":
            raise AuthenticationFailed(
                FailureReason.UNSUPPORTED_FEATURE,
                "delegation token authentication (tokenauth) is not supported by the gateway",
                client_message="Authentication failed: delegation tokens are not supported",
                user=first.username,
                mechanism=mechanism,
            )
        credential = self._lookup(first.username)
        self._user_known = credential is not None
        if credential is None:
            credential = self._fake_credential(first.username)
        server_nonce = self._nonce_factory()
        if _NONCE_RE.fullmatch(server_nonce) is None:
            raise ValueError("the server nonce must be printable ASCII without ','")
        self._client_first = first
        self._credential = credential
        self._nonce = first.nonce + server_nonce
        self._server_first = str(
            ServerFirstMessage(self._nonce, credential.salt, credential.iterations)
        )
        return self._server_first.encode("ascii")

    def _fake_credential(self, username: str) -> ScramCredential:
        """Deterministic per user name, unguessable without the server secret."""

        def derive(label: str) -> bytes:
            data = f"{label}\0{self._mechanism}\0{username}".encode()
            return hmac.new(self._secret, data, _hash_name(self._mechanism)).digest()

        size = hashlib.new(_hash_name(self._mechanism)).digest_size
        salt = (derive("salt") * (self._fake_salt_bytes // size + 1))[: self._fake_salt_bytes]
        return ScramCredential(
            self._mechanism,
            salt=salt,
            iterations=self._fake_iterations,
            stored_key=derive("stored_key"),
            server_key=derive("server_key"),
        )

    def _client_final_step(self, token: bytes, now: float) -> SaslResult:
        mechanism = self._mechanism
        first, credential = self._client_first, self._credential
        assert first is not None and credential is not None
        user = first.username
        try:
            final = ClientFinalMessage.parse(token.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _malformed(
                f"invalid SCRAM client-final message: {exc}", mechanism, user
            ) from None
        client_message = _CLIENT_FAILURE.format(mechanism)
        if final.channel_binding != first.gs2_header.encode("utf-8"):
            raise AuthenticationFailed(
                FailureReason.CHANNEL_BINDING_MISMATCH,
                "channel binding (c=) does not match the GS2 header of the client-first message",
                client_message=client_message,
                user=user,
                mechanism=mechanism,
            )
        if not hmac.compare_digest(final.nonce.encode(), self._nonce.encode()):
            raise AuthenticationFailed(
                FailureReason.NONCE_MISMATCH,
                "client-final nonce is not this exchange's nonce (replayed or forged message)",
                client_message=client_message,
                user=user,
                mechanism=mechanism,
            )
        auth_message = _auth_message(first.bare, self._server_first, final.without_proof)
        client_signature = _hmac(mechanism, credential.stored_key, auth_message)
        proof_ok = len(final.proof) == len(client_signature)
        client_key = _xor(final.proof, client_signature) if proof_ok else client_signature
        proof_ok = (
            hmac.compare_digest(_h(mechanism, client_key), credential.stored_key) and proof_ok
        )
        if not (proof_ok and self._user_known):
            reason = FailureReason.WRONG_PROOF if self._user_known else FailureReason.UNKNOWN_USER
            detail = (
                "invalid client proof" if self._user_known else "no SCRAM credential for the user"
            )
            raise AuthenticationFailed(
                reason, detail, client_message=client_message, user=user, mechanism=mechanism
            )
        server_signature = _hmac(mechanism, credential.server_key, auth_message)
        principal = Principal(name=user, mechanism=mechanism)
        lifetime = session_lifetime_ms(
            now=now,
            credential_expires_at=None,
            max_session_lifetime_ms=self._max_session_lifetime_ms,
        )
        return SaslResult(
            f"v={_b64(server_signature)}".encode("ascii"),
            completed=True,
            principal=principal,
            session_lifetime_ms=lifetime,
        )


# --------------------------------------------------------------------------------------
# client


class ScramClientSession:
    """The client side of SCRAM, for the gateway's own upstream credentials.

    See :class:`~policies.auth.base.SaslClientSession`. ``nonce`` is for tests
    (RFC 7677's example); it defaults to a fresh random value. The server's
    signature is verified before ``complete`` becomes true.
    """

    cpu_bound = True  # PBKDF2 with the server's iteration count

    def __init__(
        self, mechanism: ScramMechanism, username: str, password: str, *, nonce: str | None = None
    ) -> None:
        _hash_name(mechanism)
        self._mechanism: ScramMechanism = mechanism
        self._username = username
        self._password = password
        self._nonce = _default_nonce() if nonce is None else nonce
        if _NONCE_RE.fullmatch(self._nonce) is None:
            raise ValueError("the client nonce must be printable ASCII without ','")
        self._bare = f"n={_escape_saslname(username)},r={self._nonce}"
        self._state: Literal["initial", "server_first", "server_final", "done", "failed"] = (
            "initial"
        )
        self._server_signature = b""

    def __repr__(self) -> str:
        return f"ScramClientSession({self._mechanism!r}, user={self._username!r})"

    @property
    def mechanism(self) -> str:
        return self._mechanism

    @property
    def complete(self) -> bool:
        return self._state == "done"

    def initial_response(self) -> bytes:
        if self._state != "initial":
            raise SaslClientError("the SCRAM exchange has already started")
        self._state = "server_first"
        return f"n,,{self._bare}".encode()

    def evaluate(self, challenge: bytes) -> bytes | None:
        state, self._state = self._state, "failed"
        if state == "server_first":
            reply = self._server_first_step(challenge)
            self._state = "server_final"
            return reply
        if state == "server_final":
            self._server_final_step(challenge)
            self._state = "done"
            return None
        raise SaslClientError(f"unexpected SCRAM challenge in state {state!r}")

    def _server_first_step(self, challenge: bytes) -> bytes:
        mechanism = self._mechanism
        if len(challenge) > MAX_SERVER_FIRST_BYTES:
            raise SaslClientError(
                f"the SCRAM server-first message is {len(challenge)} bytes "
                f"(at most {MAX_SERVER_FIRST_BYTES} accepted)"
            )
        try:
            server_first = ServerFirstMessage.parse(challenge.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SaslClientError(f"invalid SCRAM server-first message: {exc}") from None
        if not server_first.nonce.startswith(self._nonce) or server_first.nonce == self._nonce:
            raise SaslClientError("the server nonce does not extend the client nonce")
        if _NONCE_RE.fullmatch(server_first.nonce) is None:
            raise SaslClientError("invalid server nonce")
        if len(server_first.nonce) > MAX_SERVER_NONCE_CHARS:
            raise SaslClientError(
                f"the server nonce is {len(server_first.nonce)} characters "
                f"(at most {MAX_SERVER_NONCE_CHARS} accepted)"
            )
        if not 1 <= len(server_first.salt) <= MAX_SERVER_SALT_BYTES:
            raise SaslClientError(
                f"the server salt is {len(server_first.salt)} bytes "
                f"(1..{MAX_SERVER_SALT_BYTES} accepted)"
            )
        # Kafka's own bounds: a broker never asks for more, and an unbounded count
        # would tie up a worker thread in PBKDF2 for as long as the broker likes.
        if not MIN_ITERATIONS <= server_first.iterations <= MAX_ITERATIONS:
            raise SaslClientError(
                f"the server asked for {server_first.iterations} iterations, "
                f"outside Kafka's bounds {MIN_ITERATIONS}..{MAX_ITERATIONS}"
            )
        salted = salted_password(
            self._password, server_first.salt, server_first.iterations, mechanism
        )
        client_key = _hmac(mechanism, salted, b"Client Key")
        stored_key = _h(mechanism, client_key)
        without_proof = f"c=biws,r={server_first.nonce}"
        auth_message = _auth_message(self._bare, challenge.decode("utf-8"), without_proof)
        proof = _xor(client_key, _hmac(mechanism, stored_key, auth_message))
        server_key = _hmac(mechanism, salted, b"Server Key")
        self._server_signature = _hmac(mechanism, server_key, auth_message)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def _server_final_step(self, challenge: bytes) -> None:
        text = challenge.decode("utf-8", errors="replace")
        if text.startswith("e="):
            error = text[2:].split(",")[0]
            raise SaslClientError(f"the server rejected the SCRAM authentication: {error}")
        if not text.startswith("v="):
            raise SaslClientError("invalid SCRAM server-final message")
        try:
            signature = _unb64(text[2:].split(",")[0])
        except (binascii.Error, ValueError):
            raise SaslClientError("invalid SCRAM server signature encoding") from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise SaslClientError("the server's SCRAM signature does not verify")
