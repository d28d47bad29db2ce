"""OAUTHBEARER: JWT validation (pyjwt), JWKS key sets with rate-limited refresh, SASL exchange."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from policies.auth.base import SaslClientError
from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.jwks import InvalidJwks, JwksKeySet, parse_jwks
from policies.auth.jwt_validation import (
    IssuerPolicy,
    JwtValidator,
    TokenRejected,
    TokenRejection,
)
from policies.auth.oauthbearer import (
    KeyRefreshNeeded,
    OAuthBearerClientSession,
    OAuthBearerServerSession,
    oauthbearer_client_token,
    oauthbearer_error_challenge,
    parse_oauthbearer_client_message,
)

NOW = 1_700_000_000.0
ISSUER = "https://issuer.example"
AUDIENCE = "kafka-gateway"
HMAC_SECRET = b"s" * 32


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key_2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    data: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    data.update(kid=kid, **extra)
    return data


def jwks(*keys: Any) -> str:
    return json.dumps({"keys": list(keys)})


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, kid: str | None = "k1", alg: str = "RS256", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWS made by hand (pyjwt refuses to make these)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture
def key_set(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> JwksKeySet:
    return JwksKeySet.from_document(jwks(jwk(rsa_key, "k1"), jwk(ec_key, "e1")), NOW)


def validator(key_set: JwksKeySet | None, **policy: Any) -> JwtValidator:
    policy.setdefault("audiences", (AUDIENCE,))
    return JwtValidator([IssuerPolicy(issuer=ISSUER, key_set=key_set, **policy)])


def rejected(v: JwtValidator, token: str, now: float = NOW) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        v.validate(token, now)
    assert not token or token not in str(info.value)
    return info.value


# --------------------------------------------------------------------------------------
# validation


def test_valid_token(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    token = validator(key_set).validate(sign(rsa_key), NOW)
    assert token.principal_name == "alice"
    assert token.issuer == ISSUER
    assert token.expires_at == int(NOW) + 600
    assert token.claims["aud"] == AUDIENCE


def test_expired(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    v = validator(key_set, leeway_s=30)
    assert rejected(v, sign(rsa_key, exp=int(NOW) - 31)).reason is TokenRejection.EXPIRED
    # within the leeway it is still accepted
    assert v.validate(sign(rsa_key, exp=int(NOW) - 29), NOW).principal_name == "alice"
    assert rejected(v, sign(rsa_key), now=NOW + 631).reason is TokenRejection.EXPIRED


def test_exp_is_required(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    failure = rejected(validator(key_set), sign(rsa_key, exp=None))
    assert failure.reason is TokenRejection.MISSING_CLAIM
    failure = rejected(validator(key_set), sign(rsa_key, exp="tomorrow"))
    assert failure.reason is TokenRejection.INVALID_CLAIM


def test_not_yet_valid(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    v = validator(key_set, leeway_s=30)
    assert rejected(v, sign(rsa_key, nbf=int(NOW) + 60)).reason is TokenRejection.NOT_YET_VALID
    assert v.validate(sign(rsa_key, nbf=int(NOW) + 20), NOW)
    failure = rejected(v, sign(rsa_key, iat=int(NOW) + 60))
    assert failure.reason is TokenRejection.ISSUED_IN_FUTURE
    assert rejected(v, sign(rsa_key, nbf=True)).reason is TokenRejection.INVALID_CLAIM


def test_wrong_audience(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    v = validator(key_set)
    assert rejected(v, sign(rsa_key, aud="other")).reason is TokenRejection.WRONG_AUDIENCE
    assert rejected(v, sign(rsa_key, aud=None)).reason is TokenRejection.WRONG_AUDIENCE
    assert rejected(v, sign(rsa_key, aud=[1, 2])).reason is TokenRejection.WRONG_AUDIENCE
    assert v.validate(sign(rsa_key, aud=["other", AUDIENCE]), NOW)
    several = validator(key_set, audiences=("a", "b"))
    assert several.validate(sign(rsa_key, aud="b"), NOW)


def test_wrong_issuer(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    failure = rejected(validator(key_set), sign(rsa_key, iss="https://evil.example"))
    assert failure.reason is TokenRejection.UNKNOWN_ISSUER
    assert "evil.example" in failure.detail
    assert (
        rejected(validator(key_set), sign(rsa_key, iss=None)).reason
        is TokenRejection.UNKNOWN_ISSUER
    )


def test_unsigned_tokens_are_never_accepted(key_set: JwksKeySet) -> None:
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "kid": "k1"}, claims(), None)
        failure = rejected(validator(key_set), token)
        assert failure.reason is TokenRejection.ALGORITHM_NOT_ALLOWED
        assert "alg none" in failure.detail


def test_hs256_signed_with_the_rsa_public_key(
    rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet
) -> None:
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = forge({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(sub="admin"), public_pem)
    # RS256 only: HS256 is not allowed at all.
    assert rejected(validator(key_set), token).reason is TokenRejection.ALGORITHM_NOT_ALLOWED
    # Even an issuer that allows HS256 verifies it with its shared secret, never a JWKS key.
    both = validator(key_set, algorithms=("RS256", "HS256"), hmac_secret=HMAC_SECRET)
    assert rejected(both, token).reason is TokenRejection.INVALID_SIGNATURE
    assert both.validate(sign(HMAC_SECRET, alg="HS256"), NOW).principal_name == "alice"
    assert both.validate(sign(rsa_key), NOW).principal_name == "alice"


def test_tampered_payload(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    header, _, signature = sign(rsa_key).split(".")
    tampered = f"{header}.{b64url(json.dumps(claims(sub='admin')).encode())}.{signature}"
    assert rejected(validator(key_set), tampered).reason is TokenRejection.INVALID_SIGNATURE
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 1
    flipped = f"{header}.{sign(rsa_key).split('.')[1]}.{b64url(bytes(raw))}"
    assert rejected(validator(key_set), flipped).reason is TokenRejection.INVALID_SIGNATURE


def test_signed_by_another_key_with_a_known_kid(
    rsa_key_2: rsa.RSAPrivateKey, key_set: JwksKeySet
) -> None:
    assert rejected(validator(key_set), sign(rsa_key_2)).reason is TokenRejection.INVALID_SIGNATURE


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "e30.e30.", "W10.e30.c2ln"])
def test_malformed_tokens(token: str, key_set: JwksKeySet) -> None:
    assert rejected(validator(key_set), token).reason in {
        TokenRejection.MALFORMED,
        TokenRejection.ALGORITHM_NOT_ALLOWED,
    }


def test_payload_must_be_an_object(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    token = jwt.api_jws.encode(b"[1,2]", rsa_key, algorithm="RS256", headers={"kid": "k1"})
    assert rejected(validator(key_set), token).reason is TokenRejection.MALFORMED


def test_crit_headers_are_rejected(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    token = sign(rsa_key)
    token = jwt.encode(
        claims(), rsa_key, algorithm="RS256", headers={"kid": "k1", "crit": ["x"], "x": 1}
    )
    assert rejected(validator(key_set), token).reason is TokenRejection.MALFORMED


def test_algorithms_are_pinned_per_issuer(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, key_set: JwksKeySet
) -> None:
    es_token = sign(ec_key, kid="e1", alg="ES256")
    assert rejected(validator(key_set), es_token).reason is TokenRejection.ALGORITHM_NOT_ALLOWED
    both = validator(key_set, algorithms=("RS256", "ES256", "PS256"))
    assert both.validate(es_token, NOW)
    assert both.validate(sign(rsa_key, alg="PS256"), NOW)
    # an ES256 header on a token whose kid is the RSA key
    mismatch = sign(ec_key, kid="k1", alg="ES256")
    assert rejected(both, mismatch).reason is TokenRejection.KEY_MISMATCH


def test_a_jwk_alg_pins_the_algorithm(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1", alg="RS256")), NOW)
    v = validator(keys, algorithms=("RS256", "PS256"))
    assert v.validate(sign(rsa_key), NOW)
    assert rejected(v, sign(rsa_key, alg="PS256")).reason is TokenRejection.KEY_MISMATCH


def test_required_and_principal_claims(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    v = validator(key_set, required_claims=("scope",), principal_claim="preferred_username")
    failure = rejected(v, sign(rsa_key, preferred_username="bob"))
    assert failure.reason is TokenRejection.MISSING_CLAIM and "scope" in failure.detail
    token = v.validate(sign(rsa_key, preferred_username="bob", scope="kafka"), NOW)
    assert token.principal_name == "bob"
    failure = rejected(v, sign(rsa_key, scope="kafka"))
    assert failure.reason is TokenRejection.MISSING_CLAIM
    failure = rejected(v, sign(rsa_key, scope="kafka", preferred_username=""))
    assert failure.reason is TokenRejection.INVALID_CLAIM
    assert (
        rejected(validator(key_set), sign(rsa_key, sub=42)).reason is TokenRejection.INVALID_CLAIM
    )


def test_token_without_kid_needs_a_single_key_set(rsa_key: rsa.RSAPrivateKey) -> None:
    single = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1")), NOW)
    assert validator(single).validate(sign(rsa_key, kid=None), NOW)
    two = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1"), jwk(rsa_key, "k2")), NOW)
    failure = rejected(validator(two), sign(rsa_key, kid=None))
    assert failure.reason is TokenRejection.UNKNOWN_KEY and not failure.needs_refresh


def test_issuer_policy_checks() -> None:
    with pytest.raises(ValueError, match="audience"):
        IssuerPolicy(issuer=ISSUER, audiences=(), key_set=JwksKeySet())
    with pytest.raises(ValueError, match="shared secret"):
        IssuerPolicy(issuer=ISSUER, audiences=("a",), algorithms=("HS256",))
    with pytest.raises(ValueError, match="at least 64 bytes"):
        IssuerPolicy(issuer=ISSUER, audiences=("a",), algorithms=("HS512",), hmac_secret=b"x" * 32)
    with pytest.raises(ValueError, match="JWKS"):
        IssuerPolicy(issuer=ISSUER, audiences=("a",))
    with pytest.raises(ValueError, match="unsupported"):
        IssuerPolicy(issuer=ISSUER, audiences=("a",), algorithms=("none",), key_set=JwksKeySet())
    policy = IssuerPolicy(issuer=ISSUER, audiences=("a",), key_set=JwksKeySet())
    with pytest.raises(ValueError, match="unique"):
        JwtValidator([policy, policy])


def test_several_issuers(rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey) -> None:
    one = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1")), NOW)
    two = JwksKeySet.from_document(jwks(jwk(rsa_key_2, "k1")), NOW)
    v = JwtValidator(
        [
            IssuerPolicy(issuer=ISSUER, audiences=(AUDIENCE,), key_set=one),
            IssuerPolicy(issuer="https://other.example", audiences=(AUDIENCE,), key_set=two),
        ]
    )
    assert v.issuers == (ISSUER, "https://other.example")
    assert (
        v.validate(sign(rsa_key_2, iss="https://other.example"), NOW).issuer
        == "https://other.example"
    )
    # the same kid under the other issuer is the other key
    failure = rejected(v, sign(rsa_key, iss="https://other.example"))
    assert failure.reason is TokenRejection.INVALID_SIGNATURE
    assert v.key_set(ISSUER) is one and v.key_sets() == {ISSUER: one, "https://other.example": two}


def test_issuer_prefix_qualifies_the_principal(
    rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    one = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1")), NOW)
    two = JwksKeySet.from_document(jwks(jwk(rsa_key_2, "k1")), NOW)
    v = JwtValidator(
        [
            IssuerPolicy(ISSUER, (AUDIENCE,), key_set=one, principal_prefix="idp-a/"),
            IssuerPolicy("https://b.example", (AUDIENCE,), key_set=two, principal_prefix="idp-b/"),
        ]
    )
    from_a = v.validate(sign(rsa_key, sub="admin"), NOW)
    from_b = v.validate(sign(rsa_key_2, sub="admin", iss="https://b.example"), NOW)
    assert (from_a.principal_name, from_a.namespace) == ("idp-a/admin", "idp-a/")
    assert (from_b.principal_name, from_b.namespace) == ("idp-b/admin", "idp-b/")
    session = OAuthBearerServerSession(v)
    token = oauthbearer_client_token(sign(rsa_key_2, sub="admin", iss="https://b.example"))
    principal = session.evaluate(token, NOW).principal
    assert principal is not None
    assert (str(principal), principal.namespace) == ("User:idp-b/admin", "idp-b/")
    # the client may name itself as in its token, or qualified
    for authzid in ("admin", "idp-a/admin"):
        message = oauthbearer_client_token(sign(rsa_key, sub="admin"), authzid=authzid)
        result = OAuthBearerServerSession(v).evaluate(message, NOW)
        assert result.principal is not None and result.principal.name == "idp-a/admin"


# --------------------------------------------------------------------------------------
# JWKS key sets and refresh


def test_unknown_kid_requests_a_rate_limited_refresh(
    rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    keys = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1")), NOW, min_refresh_interval_s=30)
    v = validator(keys)
    rotated = sign(rsa_key_2, kid="k2")
    first = rejected(v, rotated)
    assert first.reason is TokenRejection.UNKNOWN_KEY
    assert first.needs_refresh and first.refresh_issuer == ISSUER
    # While the refresh is in flight, other tokens wait for it too.
    assert rejected(v, rotated, now=NOW + 1).needs_refresh
    keys.refresh_failed(NOW + 2)
    # The fetch failed: no new refresh until 30 s after the last one started.
    assert not rejected(v, rotated, now=NOW + 3).needs_refresh
    assert not rejected(v, sign(rsa_key_2, kid="made-up"), now=NOW + 29).needs_refresh
    assert rejected(v, rotated, now=NOW + 30).needs_refresh
    # The runtime fetched the new JWKS: the token validates on the retry.
    keys.update(jwks(jwk(rsa_key, "k1"), jwk(rsa_key_2, "k2")), NOW + 31)
    assert v.validate(rotated, NOW + 31).principal_name == "alice"
    assert keys.kids == {"k1", "k2"}


def test_refresh_in_flight_expires() -> None:
    keys = JwksKeySet(min_refresh_interval_s=30)
    assert keys.lookup("k", NOW).refresh_needed
    assert keys.refresh_in_flight(NOW + 29)
    assert not keys.refresh_in_flight(NOW + 30)
    assert keys.lookup("k", NOW + 30).refresh_needed  # a new attempt


def test_periodic_refresh() -> None:
    keys = JwksKeySet(min_refresh_interval_s=30, refresh_interval_s=3600)
    assert keys.refresh_due(NOW) and not keys.loaded
    assert keys.begin_refresh(NOW)
    assert not keys.begin_refresh(NOW + 1)
    keys.refresh_failed(NOW + 1)
    assert not keys.refresh_due(NOW + 10)
    assert keys.refresh_due(NOW + 30)


def test_periodic_refresh_after_load(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1")), NOW, refresh_interval_s=3600)
    assert keys.loaded and keys.updated_at == NOW
    assert not keys.refresh_due(NOW + 3599)
    assert keys.refresh_due(NOW + 3600)


def test_a_broken_document_keeps_the_old_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1")), NOW)
    assert keys.begin_refresh(NOW + 100)
    with pytest.raises(InvalidJwks):
        keys.update("<html>oops</html>", NOW + 101)
    assert keys.kids == {"k1"} and not keys.refresh_in_flight(NOW + 102)
    assert validator(keys).validate(sign(rsa_key), NOW + 102)


def test_unusable_keys_are_skipped(rsa_key: rsa.RSAPrivateKey) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = json.loads(RSAAlgorithm.to_jwk(rsa_key))
    document = jwks(
        jwk(rsa_key, "good"),
        jwk(rsa_key, "enc", use="enc"),
        {"kty": "oct", "kid": "sym", "k": b64url(b"secret" * 8)},
        dict(private, kid="private"),
        jwk(small, "small"),
        {"kty": "RSA", "kid": "broken", "n": "AQAB"},
        {"kty": "XYZ", "kid": "weird"},
        jwk(rsa_key, "good"),
        "not an object",
    )
    keys, skipped = parse_jwks(document)
    assert [k.kid for k in keys] == ["good"]
    text = "\n".join(skipped)
    for expected in (
        "'enc'",
        "symmetric",
        "private key material",
        "1024 bits",
        "cannot be parsed",
        "unsupported key type",
        "duplicate kid",
        "not a JSON object",
    ):
        assert expected in text


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"keys": {}}', '"keys" list'),
        ("[]", '"keys" list'),
        ('{"keys": []}', "no usable signature key"),
        ('{"keys": [{"kty": "oct", "k": "AAAA"}]}', "symmetric"),
    ],
)
def test_invalid_jwks_documents(document: str, message: str) -> None:
    with pytest.raises(InvalidJwks, match=message):
        parse_jwks(document)


# --------------------------------------------------------------------------------------
# the SASL exchange


def test_client_message_parsing() -> None:
    message = parse_oauthbearer_client_message(
        b"n,a=alice,\x01auth=Bearer abc.def.ghi\x01traceid=123\x01\x01"
    )
    assert (message.token, message.authzid, message.extensions) == (
        "abc.def.ghi",
        "alice",
        {"traceid": "123"},
    )
    assert "abc.def.ghi" not in repr(message)
    assert parse_oauthbearer_client_message(b"n,,\x01auth=bearer  x.y.z\x01\x01").token == "x.y.z"
    assert (
        oauthbearer_client_token("x.y.z", authzid="a,b", extensions={"k": "v"})
        == b"n,a=a=2Cb,\x01auth=Bearer x.y.z\x01k=v\x01\x01"
    )
    assert (
        parse_oauthbearer_client_message(oauthbearer_client_token("x.y.z", authzid="a,b")).authzid
        == "a,b"
    )


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"n,,",
        b"p=tls-unique,,\x01auth=Bearer x\x01\x01",
        b"n,,auth=Bearer x\x01\x01",
        b"n,,\x01auth=Bearer x\x01",
        b"n,,\x01auth=Basic x\x01\x01",
        b"n,,\x01auth=Bearer\x01\x01",
        b"n,,\x01auth=Bearer x y\x01\x01",
        b"n,,\x01k=v\x01\x01",
        b"n,,\x01auth=Bearer x\x01auth=Bearer y\x01\x01",
        b"n,,\x01auth=Bearer x\x01k1=v\x01\x01",
        b"n,b=x,\x01auth=Bearer x\x01\x01",
        b"n,a=,\x01auth=Bearer x\x01\x01",
        b"n,,\x01auth=Bearer \xff\x01\x01",
    ],
)
def test_malformed_client_messages(message: bytes) -> None:
    with pytest.raises(ValueError):
        parse_oauthbearer_client_message(message)
    session = OAuthBearerServerSession(JwtValidator([]))
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(message, NOW)
    assert info.value.reason is FailureReason.MALFORMED_MESSAGE


def test_success_and_session_lifetime(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    token = sign(rsa_key, exp=int(NOW) + 600)
    unbounded = OAuthBearerServerSession(validator(key_set))
    result = unbounded.evaluate(oauthbearer_client_token(token), NOW)
    assert result.completed and result.challenge == b""
    assert result.principal is not None and str(result.principal) == "User:alice"
    assert result.principal.mechanism == "OAUTHBEARER"
    assert result.principal.claims["sub"] == "alice"
    assert result.session_lifetime_ms == 600_000  # bounded by exp
    bounded = OAuthBearerServerSession(validator(key_set), max_session_lifetime_ms=60_000)
    assert bounded.evaluate(oauthbearer_client_token(token), NOW).session_lifetime_ms == 60_000
    # a token accepted within the leeway after exp ends the session at once
    late = sign(rsa_key, exp=int(NOW) - 5)
    result = OAuthBearerServerSession(validator(key_set)).evaluate(
        oauthbearer_client_token(late), NOW
    )
    assert result.session_lifetime_ms == 1


def test_invalid_token_gets_the_rfc7628_error_then_fails(
    rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet
) -> None:
    session = OAuthBearerServerSession(validator(key_set))
    token = sign(rsa_key, aud="other")
    result = session.evaluate(oauthbearer_client_token(token), NOW)
    assert not result.completed
    assert json.loads(result.challenge) == {"status": "invalid_token"}
    assert result.challenge == b'{"status":"invalid_token"}'
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(b"\x01", NOW)
    failure = info.value
    assert failure.reason is FailureReason.INVALID_TOKEN
    assert failure.detail.startswith("wrong_audience:")
    assert failure.client_message == '{"status":"invalid_token"}'
    assert token not in failure.detail
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(b"\x01", NOW)
    assert info.value.reason is FailureReason.ILLEGAL_STATE


def test_key_refresh_flow(rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey) -> None:
    keys = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1")), NOW)
    v = validator(keys)
    session = OAuthBearerServerSession(v)
    message = oauthbearer_client_token(sign(rsa_key_2, kid="k2"))
    with pytest.raises(KeyRefreshNeeded) as info:
        session.evaluate(message, NOW)
    assert info.value.issuer == ISSUER
    # the runtime fetches the JWKS and calls evaluate again with the same token
    v.key_set(ISSUER).update(jwks(jwk(rsa_key, "k1"), jwk(rsa_key_2, "k2")), NOW)  # type: ignore[union-attr]
    assert session.evaluate(message, NOW).completed


def test_key_refresh_that_does_not_help(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = JwksKeySet.from_document(jwks(jwk(rsa_key, "k1")), NOW)
    session = OAuthBearerServerSession(validator(keys))
    message = oauthbearer_client_token(sign(rsa_key, kid="nope"))
    with pytest.raises(KeyRefreshNeeded):
        session.evaluate(message, NOW)
    keys.update(jwks(jwk(rsa_key, "k1")), NOW + 1)
    result = session.evaluate(message, NOW + 1)  # the retry cannot ask again
    assert result.challenge == oauthbearer_error_challenge()
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(b"\x01", NOW + 1)
    assert info.value.detail.startswith("unknown_key:")


def test_authzid_must_match_the_principal(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    session = OAuthBearerServerSession(validator(key_set))
    assert (
        OAuthBearerServerSession(validator(key_set))
        .evaluate(oauthbearer_client_token(sign(rsa_key), authzid="alice"), NOW)
        .completed
    )
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(oauthbearer_client_token(sign(rsa_key), authzid="admin"), NOW)
    assert info.value.reason is FailureReason.AUTHZID_MISMATCH


def test_error_challenge_members() -> None:
    challenge = oauthbearer_error_challenge(
        scope="kafka", openid_configuration="https://x/.well-known"
    )
    assert json.loads(challenge) == {
        "status": "invalid_token",
        "scope": "kafka",
        "openid-configuration": "https://x/.well-known",
    }


def test_client_session() -> None:
    client = OAuthBearerClientSession("a.b.c")
    assert "a.b.c" not in repr(client)
    assert client.initial_response() == b"n,,\x01auth=Bearer a.b.c\x01\x01"
    assert client.evaluate(b"") is None and client.complete

    failing = OAuthBearerClientSession("a.b.c")
    failing.initial_response()
    assert failing.evaluate(b'{"status":"invalid_token"}') == b"\x01"
    assert failing.error == '{"status":"invalid_token"}' and not failing.complete
    with pytest.raises(SaslClientError):
        failing.evaluate(b"")
    with pytest.raises(ValueError):
        OAuthBearerClientSession("not a jwt")


# --------------------------------------------------------------------------------------
# hostile tokens and documents: bounded before parsing, rejected as a typed failure


def nested_json(depth: int) -> bytes:
    return b'{"iss":"x","n":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("where", ["header", "payload"])
def test_deeply_nested_token_json_is_malformed_not_a_crash(key_set: JwksKeySet, where: str) -> None:
    """About 3 KB of nesting made Python's JSON parser raise RecursionError before login."""
    deep = b64url(nested_json(1500))
    plain = b64url(b'{"alg":"RS256","kid":"k1"}')
    token = f"{deep}.{plain}.c2ln" if where == "header" else f"{plain}.{deep}.c2ln"
    assert 2000 < len(token) < 16 * 1024
    failure = rejected(validator(key_set), token)
    assert failure.reason is TokenRejection.MALFORMED
    assert failure.detail == f"the {where} JSON nests deeper than 16 levels"


def test_nesting_within_the_limit_and_brackets_in_strings_are_fine(
    rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet
) -> None:
    token = sign(rsa_key, roles={"a": [[[["x"]]]]}, note="[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[")
    assert validator(key_set).validate(token, NOW).claims["roles"] == {"a": [[[["x"]]]]}


def test_oversized_token_is_malformed(rsa_key: rsa.RSAPrivateKey, key_set: JwksKeySet) -> None:
    token = sign(rsa_key, padding="x" * 20_000)
    failure = rejected(validator(key_set), token)
    assert failure.reason is TokenRejection.MALFORMED
    assert "at most 16384" in failure.detail


def test_nested_token_fails_the_login_as_an_invalid_token(key_set: JwksKeySet) -> None:
    """The usual failure path: RFC 7628 error challenge, then AuthenticationFailed (audited)."""
    token = f"{b64url(b'{}')}.{b64url(nested_json(1500))}.c2ln"
    session = OAuthBearerServerSession(validator(key_set))
    result = session.evaluate(oauthbearer_client_token(token), NOW)
    assert result.challenge == b'{"status":"invalid_token"}' and not result.completed
    with pytest.raises(AuthenticationFailed) as info:
        session.evaluate(b"\x01", NOW)
    assert info.value.reason is FailureReason.INVALID_TOKEN
    assert info.value.detail == "malformed_token: the payload JSON nests deeper than 16 levels"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"keys": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ('{"keys": [], "n": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
)
def test_hostile_jwks_documents(document: str, message: str) -> None:
    with pytest.raises(InvalidJwks, match=message):
        parse_jwks(document)
