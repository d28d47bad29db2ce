"""``kafka-gateway hash-password`` and ``scram-credential`` (gateway/credentials_cli.py)."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable

import pytest

from gateway.credentials_cli import (
    add_hash_password_arguments,
    add_scram_credential_arguments,
    run_hash_password,
    run_scram_credential,
)
from policies.auth.passwords import verify_password
from policies.auth.scram import ScramClientSession, ScramCredential, ScramServerSession


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def parse(add: Callable[[argparse.ArgumentParser], None], *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_hash_password_from_a_pipe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("alice-secret\nignored\n"))
    assert run_hash_password(parse(add_hash_password_arguments)) == 0
    out, err = capsys.readouterr()
    stored = out.strip()
    assert out.count("\n") == 1 and err == ""
    assert stored.startswith("scrypt$n=16384,r=8,p=1$")
    assert verify_password("alice-secret", stored)
    assert "alice-secret" not in out


def test_hash_password_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", FakeTty())
    answers = iter(["pw-1", "pw-1"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert run_hash_password(parse(add_hash_password_arguments)) == 0
    assert verify_password("pw-1", capsys.readouterr().out.strip())

    answers = iter(["pw-1", "pw-2"])
    assert run_hash_password(parse(add_hash_password_arguments)) == 1
    out, err = capsys.readouterr()
    assert out == "" and "do not match" in err


def test_password_stdin_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", FakeTty("from-stdin\r\n"))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": pytest.fail("prompted"))
    assert run_hash_password(parse(add_hash_password_arguments, "--password-stdin")) == 0
    assert verify_password("from-stdin", capsys.readouterr().out.strip())


def test_empty_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert run_hash_password(parse(add_hash_password_arguments)) == 1
    assert "empty" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run_scram_credential(parse(add_scram_credential_arguments)) == 1


def test_scram_credential(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("alice-secret\n"))
    args = parse(
        add_scram_credential_arguments,
        "--mechanism",
        "SCRAM-SHA-256",
        "--mechanism",
        "SCRAM-SHA-512",
        "--iterations",
        "8192",
    )
    assert run_scram_credential(args) == 0
    out = capsys.readouterr().out
    assert "alice-secret" not in out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["SCRAM-SHA-256", "SCRAM-SHA-512"]
    for line in lines:
        credential = ScramCredential.parse(line)
        assert credential.iterations == 8192
        client = ScramClientSession(credential.mechanism, "alice", "alice-secret")
        server = ScramServerSession(
            credential.mechanism, {"alice": credential}.get, unknown_user_secret=b"s"
        )
        final = client.evaluate(server.evaluate(client.initial_response(), 0.0).challenge)
        assert final is not None
        assert server.evaluate(final, 0.0).completed


def test_scram_credential_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert run_scram_credential(parse(add_scram_credential_arguments)) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("SCRAM-SHA-256:iterations=4096,salt=")


@pytest.mark.parametrize(
    "argv",
    [
        ["--iterations", "100"],
        ["--iterations", "x"],
        ["--iterations", "20000"],
        ["--mechanism", "SCRAM-SHA-1"],
    ],
)
def test_scram_credential_rejects_bad_options(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(add_scram_credential_arguments, *argv)
    assert "error" in capsys.readouterr().err
