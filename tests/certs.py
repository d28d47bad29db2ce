"""A throw-away PKI for tests and local trials: a CA that issues server and client certificates.

TLS and mTLS must be tested with real certificates, but committed certificates expire
and committed keys leak, so every test run makes its own with `cryptography`. Files
are PEM: certificates as ``BEGIN CERTIFICATE``, keys as unencrypted PKCS#8
``BEGIN PRIVATE KEY``, which Python's ssl, librdkafka, kafka-python and Kafka's own
``ssl.keystore.type=PEM`` all read without keytool.

    ca = make_ca(tmp_path, "test-ca")
    cert, key = ca.issue_server()                      # localhost + 127.0.0.1 (+ ::1)
    cert, key = ca.issue_client("alice", ou="dev", o="Example")

Run as a script to write a dev CA plus a gateway server certificate and client
certificates into a directory (the `deploy/examples/auth-mtls.yaml` setup):

    .venv/bin/python -m tests.certs deploy/examples/dev-certs
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
DEFAULT_SERVER_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
DEFAULT_VALID_DAYS = 30
#: Certificates start a little in the past: clocks of the JVM and the test may differ.
CLOCK_SKEW = datetime.timedelta(minutes=5)


def new_key(key_type: str = "ec") -> PrivateKey:
    """P-256 by default (instant to generate); ``"rsa"`` for 2048-bit RSA."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key_type must be 'ec' or 'rsa', got {key_type!r}")


def write_key(key: PrivateKey, path: Path) -> Path:
    """Unencrypted PKCS#8 PEM, readable by the owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _name(cn: str, ou: str | None = None, o: str | None = None) -> x509.Name:
    """Subject in the order Kafka prints DNs: CN first (``CN=alice,OU=dev,O=Example``)."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    if o is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    return x509.Name(list(reversed(attrs)))  # RFC 4514 strings list the last RDN first


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _validity(valid_days: int, expired: bool) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    if expired:  # for negative tests: ended yesterday
        return now - datetime.timedelta(days=valid_days + 1), now - datetime.timedelta(days=1)
    return now - CLOCK_SKEW, now + datetime.timedelta(days=valid_days)


@dataclass
class CertAuthority:
    """A self-signed root CA whose files live in ``directory``; issues leaf certificates."""

    name: str
    directory: Path
    key: PrivateKey
    cert: x509.Certificate
    key_type: str = "ec"

    @property
    def cert_path(self) -> Path:
        """The CA certificate: what clients and brokers put in their trust store."""
        return self.directory / f"{self.name}.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / f"{self.name}-key.pem"

    def issue_server(
        self,
        hostnames: Sequence[str] = DEFAULT_SERVER_NAMES,
        name: str = "server",
        *,
        valid_days: int = DEFAULT_VALID_DAYS,
        expired: bool = False,
    ) -> tuple[Path, Path]:
        """A server certificate for `hostnames` (DNS names and IPs): (cert_path, key_path)."""
        if not hostnames:
            raise ValueError("a server certificate needs at least one host name")
        return self._issue(
            name,
            _name(hostnames[0]),
            ExtendedKeyUsageOID.SERVER_AUTH,
            san=_san(hostnames),
            valid_days=valid_days,
            expired=expired,
        )

    def issue_client(
        self,
        subject_cn: str,
        ou: str | None = None,
        o: str | None = None,
        *,
        name: str | None = None,
        valid_days: int = DEFAULT_VALID_DAYS,
        expired: bool = False,
    ) -> tuple[Path, Path]:
        """A client certificate for mTLS with subject ``CN=<cn>[,OU=<ou>][,O=<o>]``."""
        return self._issue(
            name or f"client-{subject_cn}",
            _name(subject_cn, ou, o),
            ExtendedKeyUsageOID.CLIENT_AUTH,
            san=None,
            valid_days=valid_days,
            expired=expired,
        )

    def _issue(
        self,
        name: str,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        *,
        san: x509.SubjectAlternativeName | None,
        valid_days: int,
        expired: bool,
    ) -> tuple[Path, Path]:
        key = new_key(self.key_type)
        not_before, not_after = _validity(valid_days, expired)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = write_cert(cert, self.directory / f"{name}.pem")
        return cert_path, write_key(key, self.directory / f"{name}-key.pem")


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=True,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=False,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    tmp_dir: Path,
    name: str = "test-ca",
    *,
    key_type: str = "ec",
    valid_days: int = DEFAULT_VALID_DAYS,
) -> CertAuthority:
    """A new self-signed CA writing ``<name>.pem`` / ``<name>-key.pem`` into `tmp_dir`."""
    directory = Path(tmp_dir)
    directory.mkdir(parents=True, exist_ok=True)
    key = new_key(key_type)
    subject = _name(name, o="kafka-gateway tests")
    not_before, not_after = _validity(valid_days, expired=False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca = CertAuthority(name=name, directory=directory, key=key, cert=cert, key_type=key_type)
    write_cert(cert, ca.cert_path)
    write_key(key, ca.key_path)
    return ca


def subject_string(cert_path: Path) -> str:
    """The subject as RFC 4514 text (``CN=alice,OU=dev,O=Example``), for assertions."""
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).subject.rfc4514_string()


# ------------------------------------------------------------------ dev CLI


def write_dev_certs(
    directory: Path, clients: Sequence[str] = ("alice",), hostnames: Sequence[str] = ()
) -> dict[str, Path]:
    """The dev setup for `deploy/examples/auth-mtls.yaml`; returns the files by role.

    ``ca.pem`` (trust this), ``gateway.pem``/``gateway-key.pem`` (the gateway's
    listener), and ``<client>.pem``/``<client>-key.pem`` per client, subject
    ``CN=<client>,OU=dev,O=kafka-gateway``. Valid for a year; local trials only.
    """
    ca = make_ca(directory, "ca", valid_days=365)
    names = tuple(dict.fromkeys((*DEFAULT_SERVER_NAMES, *hostnames)))
    server_cert, server_key = ca.issue_server(names, "gateway", valid_days=365)
    files = {"ca": ca.cert_path, "gateway": server_cert, "gateway-key": server_key}
    for client in clients:
        cert, key = ca.issue_client(
            client, ou="dev", o="kafka-gateway", name=client, valid_days=365
        )
        files[client] = cert
        files[f"{client}-key"] = key
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.certs",
        description="Write a dev CA, a gateway server certificate and client certificates.",
    )
    parser.add_argument("directory", type=Path, help="where the PEM files go (created)")
    parser.add_argument(
        "--client", action="append", dest="clients", metavar="CN", help="client CN (default alice)"
    )
    parser.add_argument(
        "--host", action="append", default=[], metavar="NAME", help="extra server name or IP"
    )
    args = parser.parse_args(argv)
    files = write_dev_certs(args.directory, args.clients or ["alice"], args.host)
    for role, path in files.items():
        print(f"{role:>12}: {path}")
    print("These are for local trials only: the CA key is in the same directory.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
