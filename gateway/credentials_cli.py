"""``kafka-gateway hash-password`` and ``kafka-gateway scram-credential``.

Both read the password from the terminal (asked twice, not echoed) or, when
stdin is not a terminal or ``--password-stdin`` is given, from the first line of
stdin; they print only the stored form, never the password. Wire them into the
main parser with::

    p = commands.add_parser("hash-password", help="print a password hash for PLAIN users")
    add_hash_password_arguments(p)
    p.set_defaults(handler=run_hash_password)
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TextIO

from policies.auth.passwords import hash_password
from policies.auth.scram import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    SCRAM_MECHANISMS,
    derive_scram_credential,
)

__all__ = [
    "PasswordInputError",
    "add_hash_password_arguments",
    "add_scram_credential_arguments",
    "read_password",
    "run_hash_password",
    "run_scram_credential",
]


class PasswordInputError(Exception):
    """No usable password was entered."""


def read_password(
    *, from_stdin: bool, stdin: TextIO | None = None, prompt: str = "Password: "
) -> str:
    """The password: first line of stdin (``from_stdin`` or no TTY), else asked twice on the TTY."""
    stream = sys.stdin if stdin is None else stdin
    if from_stdin or not stream.isatty():
        line = stream.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        password = getpass.getpass(prompt)
        if getpass.getpass("Repeat: ") != password:
            raise PasswordInputError("the passwords do not match")
    if not password:
        raise PasswordInputError("the password is empty")
    return password


def add_hash_password_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``kafka-gateway hash-password``."""
    parser.description = (
        "Print the salted scrypt hash of a password, for listener.authentication.users "
        "(PLAIN). The password is asked for twice on a terminal, or read from the first "
        "line of stdin."
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin even on a terminal",
    )


def run_hash_password(args: argparse.Namespace) -> int:
    """``kafka-gateway hash-password``: print the hash; exit 1 without a usable password."""
    try:
        password = read_password(from_stdin=args.password_stdin)
    except PasswordInputError as exc:
        print(f"kafka-gateway hash-password: {exc}", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _iterations(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not MIN_ITERATIONS <= value <= MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(
            f"must be in {MIN_ITERATIONS}..{MAX_ITERATIONS} (Kafka's bounds), got {value}"
        )
    return value


def add_scram_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``kafka-gateway scram-credential``."""
    parser.description = (
        "Print the stored SCRAM credential (salt, iterations, StoredKey, ServerKey; never "
        "the password) for listener.authentication.scram_credentials. Give --mechanism "
        "twice for both SHA-256 and SHA-512, one line each."
    )
    parser.add_argument(
        "--mechanism",
        action="append",
        choices=SCRAM_MECHANISMS,
        help="SCRAM-SHA-256 (default) or SCRAM-SHA-512; repeat for both",
    )
    parser.add_argument(
        "--iterations",
        type=_iterations,
        default=DEFAULT_ITERATIONS,
        help=f"PBKDF2 iterations, {MIN_ITERATIONS}..{MAX_ITERATIONS} "
        f"(default {DEFAULT_ITERATIONS})",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin even on a terminal",
    )


def run_scram_credential(args: argparse.Namespace) -> int:
    """``kafka-gateway scram-credential``: print one credential line per mechanism."""
    try:
        password = read_password(from_stdin=args.password_stdin)
    except PasswordInputError as exc:
        print(f"kafka-gateway scram-credential: {exc}", file=sys.stderr)
        return 1
    mechanisms = list(dict.fromkeys(args.mechanism or ["SCRAM-SHA-256"]))
    for mechanism in mechanisms:
        print(derive_scram_credential(password, mechanism, iterations=args.iterations))
    return 0
