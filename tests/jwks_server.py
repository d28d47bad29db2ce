"""A local JWKS (and OAuth token) server plus JWT minting, for OAUTHBEARER tests.

The gateway fetches signing keys from a JWKS URL, caches them, and refreshes on an
unknown ``kid`` at a limited rate; the tests need to swap keys at runtime (rotation)
and count fetches (rate limiting), so this is a real HTTP(S) server on 127.0.0.1 in
a background thread (stdlib ``http.server``), not a mock.

It also serves an OAuth 2 client-credentials token endpoint (``POST /token``), which
mints JWTs with a test key: the gateway's upstream OAUTHBEARER login fetches and
renews its own token there.

Token helpers build good tokens with pyjwt and, by hand, the bad ones pyjwt refuses to
make: ``alg: none`` and HS256 signed with the RSA public key as HMAC secret (the
algorithm-confusion attack), plus a payload tampered after signing.

    key = make_rsa_key("k1")
    with JwksServer(jwks_of(key)) as server:           # server.jwks_url
        token = mint_token(key, standard_claims("alice"))
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

HOST = "127.0.0.1"
DEFAULT_ISSUER = "https://issuer.example"
DEFAULT_AUDIENCE = "kafka-gateway"
JWKS_PATH = "/jwks.json"
TOKEN_PATH = "/token"
DISCOVERY_PATH = "/.well-known/openid-configuration"


# ------------------------------------------------------------------- keys


@dataclass(frozen=True)
class SigningKey:
    """A private key with its ``kid`` and the JWS algorithm it signs with."""

    kid: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)
    alg: str = "RS256"

    def public_jwk(self) -> dict[str, Any]:
        """The JWKS entry: public parameters plus ``kid``, ``alg`` and ``use``."""
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        """PKCS#8, unencrypted (e.g. for `deploy/examples/dev-signing-key.pem`)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def make_rsa_key(kid: str = "test-key", alg: str = "RS256", bits: int = 2048) -> SigningKey:
    """An RSA signing key (RS256/RS384/RS512/PS256...)."""
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=bits), alg)


def make_ec_key(kid: str = "test-ec-key") -> SigningKey:
    """A P-256 key for ES256."""
    return SigningKey(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")


def load_signing_key(pem: bytes, kid: str, alg: str = "RS256") -> SigningKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return SigningKey(kid, key, alg)


def jwks_of(*keys: SigningKey) -> dict[str, Any]:
    """A JWK Set document with the public half of each key."""
    return {"keys": [key.public_jwk() for key in keys]}


# ----------------------------------------------------------------- tokens


class _Kid(enum.Enum):
    FROM_KEY = "from-key"


FROM_KEY = _Kid.FROM_KEY


def standard_claims(
    sub: str = "alice",
    *,
    iss: str = DEFAULT_ISSUER,
    aud: str | list[str] = DEFAULT_AUDIENCE,
    lifetime: float = 300.0,
    now: float | None = None,
    not_before: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``sub``/``iss``/``aud``/``iat``/``exp`` (and ``nbf`` if given, seconds from now).

    A negative `lifetime` gives an expired token; a positive `not_before` one that is
    not valid yet. `extra` adds or overrides claims (``scope=...``).
    """
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": sub,
        "iss": iss,
        "aud": aud,
        "iat": int(issued),
        "exp": int(issued + lifetime),
        "jti": uuid.uuid4().hex,
    }
    if not_before is not None:
        claims["nbf"] = int(issued + not_before)
    claims.update(extra)
    return claims


def mint_token(
    key: SigningKey,
    claims: Mapping[str, Any],
    alg: str | None = None,
    kid: str | _Kid | None = FROM_KEY,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A JWT signed by `key` with pyjwt; ``kid=None`` leaves the header without one."""
    header: dict[str, Any] = dict(headers or {})
    resolved_kid = key.kid if kid is FROM_KEY else kid
    if resolved_kid is not None:
        header["kid"] = resolved_kid
    return jwt.encode(dict(claims), key.private_key, algorithm=alg or key.alg, headers=header)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _segment(obj: Mapping[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unsigned_token(claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
    """``alg: none`` with an empty signature: must always be rejected."""
    header = {"alg": "none", "typ": "JWT", **(headers or {})}
    return f"{_segment(header)}.{_segment(claims)}."


def hs256_with_public_key(
    key: SigningKey, claims: Mapping[str, Any], kid: str | _Kid | None = FROM_KEY
) -> str:
    """HS256 with the PEM of `key`'s *public* key as HMAC secret (alg confusion, CVE-2016-10555).

    A verifier that picks the algorithm from the token header and feeds the RSA
    public key to HMAC would accept it; pyjwt refuses to build it, so it is built here.
    """
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    resolved_kid = key.kid if kid is FROM_KEY else kid
    if resolved_kid is not None:
        header["kid"] = resolved_kid
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.digest(key.public_pem(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64url(signature)}"


def tamper_payload(token: str, **changes: Any) -> str:
    """`token` with claims changed after signing (the signature no longer matches)."""
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims.update(changes)
    return f"{header}.{_segment(claims)}.{signature}"


def token_header(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(token.split(".")[0]))
    return header


# ----------------------------------------------------------------- server


@dataclass
class TokenEndpoint:
    """Client-credentials grant: known clients get a JWT for their client id."""

    key: SigningKey
    clients: dict[str, str]
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    lifetime: float = 300.0
    extra_claims: dict[str, Any] = field(default_factory=dict)

    def issue(self, client_id: str, scope: str | None) -> dict[str, Any]:
        claims = standard_claims(
            client_id, iss=self.issuer, aud=self.audience, lifetime=self.lifetime
        )
        if scope:
            claims["scope"] = scope
        claims.update(self.extra_claims)
        return {
            "access_token": mint_token(self.key, claims),
            "token_type": "Bearer",
            "expires_in": int(self.lifetime),
            **({"scope": scope} if scope else {}),
        }


@dataclass
class _State:
    """Shared between the server thread and the test, behind `lock`."""

    jwks: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=dict)
    fail_status: int | None = None
    delay: float = 0.0
    token_endpoint: TokenEndpoint | None = None
    base_url: str = ""


class JwksServer:
    """Serves `jwks` at ``/jwks.json`` on 127.0.0.1 (HTTPS with ``tls=(cert, key)``).

    Swap the document with ``set_jwks``; ``request_count()`` counts fetches per path;
    ``fail_with(503)`` makes every request fail until ``fail_with(None)``;
    ``delay`` slows answers (timeouts). ``enable_token_endpoint`` adds ``POST /token``.
    """

    def __init__(
        self,
        jwks: Mapping[str, Any] | None = None,
        *,
        tls: tuple[Path, Path] | None = None,
        port: int = 0,
    ) -> None:
        self._state = _State(jwks=dict(jwks or {"keys": []}))
        self._tls = tls
        self._httpd = ThreadingHTTPServer((HOST, port), _handler_for(self._state))
        self._httpd.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None
        self._state.base_url = self.base_url

    # -- addresses

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{HOST}:{self.port}"

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    # -- behaviour

    def set_jwks(self, jwks: Mapping[str, Any]) -> None:
        """Serve a new document from the next request on (key rotation)."""
        with self._state.lock:
            self._state.jwks = dict(jwks)

    def set_keys(self, *keys: SigningKey) -> None:
        self.set_jwks(jwks_of(*keys))

    def fail_with(self, status: int | None) -> None:
        """Answer every request with `status` (e.g. 503) until called with None."""
        with self._state.lock:
            self._state.fail_status = status

    def set_delay(self, seconds: float) -> None:
        with self._state.lock:
            self._state.delay = seconds

    def enable_token_endpoint(
        self,
        key: SigningKey,
        clients: Mapping[str, str],
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        lifetime: float = 300.0,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> None:
        """``POST /token`` with ``grant_type=client_credentials`` and client id/secret
        (HTTP Basic or form fields) returns a JWT signed by `key`."""
        endpoint = TokenEndpoint(
            key, dict(clients), issuer, audience, lifetime, dict(extra_claims or {})
        )
        with self._state.lock:
            self._state.token_endpoint = endpoint

    def request_count(self, path: str = JWKS_PATH) -> int:
        with self._state.lock:
            return self._state.counts.get(path, 0)

    def reset_counts(self) -> None:
        with self._state.lock:
            self._state.counts.clear()

    # -- lifecycle

    def start(self) -> JwksServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_for(state: _State) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to `state` (http.server instantiates one per request)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest shows stderr of failing tests, and this would flood it."""

        def do_GET(self) -> None:
            path = self._count()
            if self._failing():
                return
            if path == JWKS_PATH:
                with state.lock:
                    body = dict(state.jwks)
                self._json(200, body)
            elif path == DISCOVERY_PATH:
                self._json(200, _discovery(state))
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            path = self._count()
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            if self._failing():
                return
            if path != TOKEN_PATH:
                self._json(404, {"error": "not_found"})
                return
            status, body = _token_response(state, self.headers.get("Authorization"), form)
            self._json(status, body)

        def _count(self) -> str:
            path = self.path.split("?", 1)[0]
            with state.lock:
                state.counts[path] = state.counts.get(path, 0) + 1
                delay = state.delay
            if delay:
                time.sleep(delay)
            return path

        def _failing(self) -> bool:
            with state.lock:
                status = state.fail_status
            if status is not None:
                self._json(status, {"error": "injected failure"})
            return status is not None

        def _json(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _discovery(state: _State) -> dict[str, Any]:
    with state.lock:
        issuer = state.token_endpoint.issuer if state.token_endpoint else DEFAULT_ISSUER
        base = state.base_url
    return {"issuer": issuer, "jwks_uri": base + JWKS_PATH, "token_endpoint": base + TOKEN_PATH}


def _client_credentials(
    authorization: str | None, form: Mapping[str, list[str]]
) -> tuple[str, str] | None:
    """Client id and secret from HTTP Basic (RFC 6749 2.3.1) or the form body."""
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:]).decode()
        except ValueError:
            return None
        client_id, sep, secret = decoded.partition(":")
        return (client_id, secret) if sep else None
    if "client_id" in form and "client_secret" in form:
        return form["client_id"][0], form["client_secret"][0]
    return None


def _token_response(
    state: _State, authorization: str | None, form: Mapping[str, list[str]]
) -> tuple[int, dict[str, Any]]:
    with state.lock:
        endpoint = state.token_endpoint
    if endpoint is None:
        return 404, {"error": "not_found"}
    if form.get("grant_type", [""])[0] != "client_credentials":
        return 400, {"error": "unsupported_grant_type"}
    credentials = _client_credentials(authorization, form)
    if credentials is None or not hmac.compare_digest(
        endpoint.clients.get(credentials[0], "\0").encode(), credentials[1].encode()
    ):
        return 401, {"error": "invalid_client"}
    scope = form.get("scope", [None])[0]
    return 200, endpoint.issue(credentials[0], scope)
