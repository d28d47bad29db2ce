"""Password hashes for PLAIN users: scrypt, self-describing, constant-time checks."""

from __future__ import annotations

import base64

import pytest

from policies.auth.passwords import (
    InvalidPasswordHash,
    PasswordHash,
    dummy_password_hash,
    hash_password,
    verify_password,
)


def test_hash_format_and_verify() -> None:
    stored = hash_password("alice-secret")
    prefix, params, salt, digest = stored.split("$")
    assert (prefix, params) == ("scrypt", "n=16384,r=8,p=1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32
    assert "alice-secret" not in stored
    assert verify_password("alice-secret", stored)
    assert not verify_password("alice-secreT", stored)
    assert not verify_password("", stored)


def test_salt_makes_hashes_differ_and_is_reproducible() -> None:
    a = hash_password("pw", n=16, r=1, p=1)
    b = hash_password("pw", n=16, r=1, p=1)
    assert a != b
    salt = b"0123456789abcdef"
    assert hash_password("pw", salt=salt, n=16, r=1, p=1) == hash_password(
        "pw", salt=salt, n=16, r=1, p=1
    )


def test_rfc7914_test_vector() -> None:
    # RFC 7914 section 12: scrypt("password", "NaCl", N=1024, r=8, p=16, dkLen=64).
    expected = bytes.fromhex(
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
    )
    # (The 4-byte salt is below what a stored hash may use, so build it directly.)
    vector = PasswordHash(n=1024, r=8, p=16, salt=b"NaCl", digest=expected)
    assert verify_password("password", vector)
    assert not verify_password("Password", vector)


def test_unicode_passwords() -> None:
    stored = hash_password("pässwörd-🔑", n=16, r=1, p=1)
    assert verify_password("pässwörd-🔑", stored)
    assert not verify_password("passwort-🔑", stored)


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("alice-secret", "store only hashes: run kafka-gateway hash-password"),
        ("bcrypt$x$y$z", "not a password hash"),
        ("scrypt$n=16384,r=8$c2FsdHNhbHQ=$" + "A" * 44, "need n, r and p"),
        ("scrypt$n=1000,r=8,p=1$c2FsdHNhbHQ=$" + "A" * 44, "power of 2"),
        ("scrypt$n=16384,r=8,p=1,p=2$c2FsdHNhbHQ=$" + "A" * 44, "invalid scrypt parameters"),
        ("scrypt$n=16384,r=99,p=1$c2FsdHNhbHQ=$" + "A" * 44, "r must be in"),
        ("scrypt$n=2097152,r=8,p=1$c2FsdHNhbHQ=$" + "A" * 44, "power of 2 in"),
        ("scrypt$n=16384,r=8,p=1$not base64!$" + "A" * 44, "salt is not valid base64"),
        ("scrypt$n=16384,r=8,p=1$c2FsdHNhbHQ=$c2hvcnQ=", "at least 16 bytes"),
        ("scrypt$n=16384,r=8,p=1$c2FsdHNhbHQ=", "not a password hash"),
    ],
)
def test_malformed_hashes_are_rejected(stored: str, message: str) -> None:
    with pytest.raises(InvalidPasswordHash, match=message):
        PasswordHash.parse(stored)
    with pytest.raises(InvalidPasswordHash):
        verify_password("x", stored)


def test_repr_hides_salt_and_digest() -> None:
    parsed = PasswordHash.parse(hash_password("pw", n=16, r=1, p=1))
    assert "salt" not in repr(parsed) and "digest" not in repr(parsed)
    assert str(parsed).startswith("scrypt$n=16,r=1,p=1$")


def test_dummy_hash_matches_nothing_and_costs_the_same() -> None:
    real = PasswordHash.parse(hash_password("pw", n=16, r=1, p=1))
    dummy = dummy_password_hash(real)
    assert (dummy.n, dummy.r, dummy.p, len(dummy.digest)) == (16, 1, 1, 32)
    assert not dummy.matches("pw")
    default = dummy_password_hash()
    assert (default.n, default.r, default.p) == (16384, 8, 1)
