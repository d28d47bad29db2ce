"""Client-certificate principals: Kafka's ``ssl.principal.mapping.rules``.

A rule list is comma (or newline) separated and evaluated in order; the first
rule that matches the certificate subject's RFC 2253 distinguished name gives the
principal name:

* ``DEFAULT`` matches everything and yields the full DN
  (``CN=alice,OU=eng,O=Example,C=US``);
* ``RULE:<regex>/<replacement>/`` applies when ``regex`` matches the whole DN
  and yields the DN with every match replaced (Java ``replaceAll``: ``$1`` refers
  to a group, ``\\`` escapes); ``/L`` or ``/U`` after it lower- or upper-cases the
  result. ``/`` inside the regex or replacement is written ``\\/``.

Parsing and matching follow Kafka's ``SslPrincipalMapper`` (same splitting
regexes, same back-reference rules). Java and Python regular expressions agree
on the constructs such rules use; Java's named groups ``(?<name>...)`` are
accepted too. The DN is formatted like Java's ``X500Principal.getName()``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from policies.auth.errors import AuthenticationFailed, FailureReason
from policies.auth.principal import Principal

__all__ = [
    "DEFAULT_RULES",
    "InvalidMappingRule",
    "MappingRule",
    "NoMatchingRule",
    "map_principal",
    "parse_mapping_rules",
    "subject_dn_from_der",
    "subject_dn_from_peercert",
    "tls_principal",
]

DEFAULT_RULES: Final = "DEFAULT"

# Kafka's SslPrincipalMapper patterns, verbatim.
_RULE_PATTERN: Final = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_RULE_PARSER: Final = re.compile(_RULE_PATTERN)
_RULE_SPLITTER: Final = re.compile(r"\s*(" + _RULE_PATTERN + r")\s*(,\s*|$)")


class InvalidMappingRule(ValueError):
    """A ``principal_mapping_rules`` entry cannot be parsed (a configuration error)."""


class NoMatchingRule(AuthenticationFailed):
    """No rule applies to the subject DN: the connection is not authenticated (as in Kafka)."""

    def __init__(self, subject_dn: str) -> None:
        super().__init__(
            FailureReason.NO_MATCHING_RULE,
            f"no principal mapping rule applies to {subject_dn!r}",
            client_message="No principal mapping rule applies to the client certificate",
            mechanism="MTLS",
        )
        self.subject_dn = subject_dn


@dataclass(frozen=True, slots=True)
class _Literal:
    text: str


@dataclass(frozen=True, slots=True)
class _Group:
    ref: int | str


@dataclass(frozen=True, slots=True)
class MappingRule:
    """One parsed rule; ``str()`` prints it like Kafka's ``Rule.toString()``."""

    is_default: bool
    pattern: str | None = None
    replacement: str | None = None
    to_lower: bool = False
    to_upper: bool = False

    @property
    def _compiled(self) -> re.Pattern[str]:
        assert self.pattern is not None
        return _compile(self.pattern)

    def apply(self, dn: str) -> str | None:
        """The mapped name, or ``None`` if the rule does not match ``dn``."""
        if self.is_default:
            return dn
        regex = self._compiled
        if regex.fullmatch(dn) is None:
            return None
        assert self.replacement is not None
        parts = _parse_replacement(self.replacement, regex)
        result = regex.sub(lambda m: _expand(parts, m), dn)
        if self.to_lower:
            return result.lower()
        if self.to_upper:
            return result.upper()
        return result

    def __str__(self) -> str:
        if self.is_default:
            return "DEFAULT"
        text = "RULE:" + (self.pattern or "")
        if self.replacement is not None:
            text += "/" + self.replacement
        if self.to_lower:
            text += "/L"
        elif self.to_upper:
            text += "/U"
        return text


_COMPILED: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        # Java's named groups (?<name>...) are Python's (?P<name>...).
        python = re.sub(r"(?<!\\)\(\?<(?=[A-Za-z])", "(?P<", pattern)
        compiled = re.compile(python)
        if len(_COMPILED) < 1024:
            _COMPILED[pattern] = compiled
    return compiled


def _parse_replacement(text: str, regex: re.Pattern[str]) -> list[_Literal | _Group]:
    """Java ``Matcher.appendReplacement`` syntax, with Kafka's escaping of impossible ``$n``.

    ``\\x`` is a literal ``x``; ``$n`` takes the longest prefix of the digits that
    names an existing group (a ``$n`` naming no group is literal text, as Kafka's
    ``escapeLiteralBackReferences`` makes it); ``${name}`` is a named group.
    """
    groups = regex.groups
    parts: list[_Literal | _Group] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text):
                raise InvalidMappingRule("character to be escaped is missing at the end")
            literal.append(text[i + 1])
            i += 2
        elif char == "$":
            if i + 1 < len(text) and text[i + 1] == "{":
                end = text.find("}", i + 2)
                name = text[i + 2 : end] if end > 0 else ""
                if not name or name not in regex.groupindex:
                    raise InvalidMappingRule(f"no group named {name!r} in the rule's pattern")
                parts.extend([_Literal("".join(literal)), _Group(name)])
                literal = []
                i = end + 1
                continue
            j = i + 1
            while j < len(text) and text[j].isdigit():
                j += 1
            digits = text[i + 1 : j]
            if not digits:
                raise InvalidMappingRule("'$' in a replacement must be followed by a group number")
            ref = int(digits[0])
            used = 1
            while used < len(digits) and ref * 10 + int(digits[used]) <= groups:
                ref = ref * 10 + int(digits[used])
                used += 1
            if digits[0] != "0" and ref > groups:
                literal.append(text[i:j])  # Kafka escapes back-references beyond the groups
            else:
                parts.extend([_Literal("".join(literal)), _Group(ref)])
                literal = []
                literal.append(digits[used:])
            i = j
        else:
            literal.append(char)
            i += 1
    parts.append(_Literal("".join(literal)))
    return [p for p in parts if not (isinstance(p, _Literal) and not p.text)]


def _expand(parts: list[_Literal | _Group], match: re.Match[str]) -> str:
    out = []
    for part in parts:
        if isinstance(part, _Literal):
            out.append(part.text)
        else:
            out.append(match.group(part.ref) or "")
    return "".join(out)


def _split_rules(rules: str) -> list[str]:
    return [m.group(1) for m in _RULE_SPLITTER.finditer(rules.strip())]


def parse_mapping_rules(rules: str | Sequence[str]) -> tuple[MappingRule, ...]:
    """Parse a rules string (comma/newline separated) or a list of rules.

    Empty entries are ignored; raises :class:`InvalidMappingRule` for an entry
    that is neither ``DEFAULT`` nor a well-formed ``RULE:...``, or whose regex or
    replacement is invalid.
    """
    if isinstance(rules, str):
        entries = _split_rules(rules.replace("\r\n", ",").replace("\n", ","))
    else:
        entries = [e for rule in rules for e in _split_rules(rule)]
    result: list[MappingRule] = []
    for entry in entries:
        match = _RULE_PARSER.match(entry)
        if match is None or match.end() != len(entry):
            rest = entry[match.end() :] if match else entry
            raise InvalidMappingRule(f"invalid rule {entry!r}: unmatched text {rest!r}")
        if match.group(1) is not None:
            result.append(MappingRule(is_default=True))
        elif match.group(2) is not None:
            pattern, replacement, case = match.group(2), match.group(4), match.group(6)
            try:
                compiled = _compile(pattern)
            except re.error as exc:
                raise InvalidMappingRule(f"invalid regex in rule {entry!r}: {exc}") from None
            _parse_replacement(replacement, compiled)
            result.append(
                MappingRule(
                    is_default=False,
                    pattern=pattern,
                    replacement=replacement,
                    to_lower=case == "L",
                    to_upper=case == "U",
                )
            )
        # else: an empty entry, ignored like Kafka does
    return tuple(result)


def map_principal(subject_dn: str, rules: str | Sequence[MappingRule]) -> str:
    """The principal name for ``subject_dn``: the first rule that applies.

    ``rules`` is a rules string or the result of :func:`parse_mapping_rules`.
    Raises :class:`NoMatchingRule` if none applies (a list without ``DEFAULT``).
    """
    parsed = parse_mapping_rules(rules) if isinstance(rules, str) else rules
    for rule in parsed:
        name = rule.apply(subject_dn)
        if name is not None:
            return name
    raise NoMatchingRule(subject_dn)


def tls_principal(subject_dn: str, rules: str | Sequence[MappingRule]) -> Principal:
    """The ``MTLS`` principal of a client certificate (raises :class:`NoMatchingRule`)."""
    return Principal(name=map_principal(subject_dn, rules), mechanism="MTLS")


# --------------------------------------------------------------------------------------
# subject DN formatting, like Java's X500Principal.getName() (RFC 2253)

#: Attribute types Java prints by keyword in RFC 2253 form: OpenSSL long name -> keyword.
_KEYWORDS: Final = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_KEYWORD_OIDS: Final = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
#: Other attributes Python's ``getpeercert()`` names: long name -> (OID, likely DER string tag).
_OTHER_ATTRIBUTES: Final = {
    "emailAddress": ("1.2.840.113549.1.9.1", 0x16),  # IA5String
    "serialNumber": ("2.5.4.5", 0x13),  # PrintableString
    "dnQualifier": ("2.5.4.46", 0x13),
    "surname": ("2.5.4.4", 0x0C),
    "givenName": ("2.5.4.42", 0x0C),
    "initials": ("2.5.4.43", 0x0C),
    "generationQualifier": ("2.5.4.44", 0x0C),
    "title": ("2.5.4.12", 0x0C),
    "pseudonym": ("2.5.4.65", 0x0C),
    "businessCategory": ("2.5.4.15", 0x0C),
    "postalCode": ("2.5.4.17", 0x0C),
    "name": ("2.5.4.41", 0x0C),
    "description": ("2.5.4.13", 0x0C),
    "organizationIdentifier": ("2.5.4.97", 0x0C),
}
_SPECIAL: Final = ',+"\\<>;'


def _escape_value(value: str) -> str:
    out = []
    for char in value:
        if char in _SPECIAL:
            out.append("\\" + char)
        elif char == "\0":
            out.append("\\00")
        else:
            out.append(char)
    text = "".join(out)
    if text.startswith("#") or text.startswith(" "):
        text = "\\" + text
    if text.endswith(" ") and not text.endswith("\\ "):
        text = text[:-1] + "\\ "
    return text


def _der_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    body = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _hex_value(tag: int, value: bytes) -> str:
    return "#" + (bytes([tag]) + _der_length(len(value)) + value).hex()


def _encode_for_tag(tag: int, value: str) -> bytes:
    if tag == 0x1E:  # BMPString
        return value.encode("utf-16-be")
    if tag == 0x1C:  # UniversalString
        return value.encode("utf-32-be")
    return value.encode("utf-8")


def subject_dn_from_peercert(subject: Sequence[Sequence[tuple[str, str]]]) -> str:
    """RFC 2253 DN of ``ssl.SSLSocket.getpeercert()["subject"]``, the way Java prints it.

    ``getpeercert()`` lists RDNs most-significant first (``C`` ... ``CN``); the DN
    string reverses them: ``CN=alice,OU=eng,O=Example,C=US``. Attributes without an
    RFC 2253 keyword (``emailAddress``...) print as ``OID=#<DER hex>`` like Java;
    the DER string type is not in ``getpeercert()``'s output and is assumed (IA5String
    for e-mail, PrintableString for serial numbers, UTF8String otherwise). For an
    exact match with Kafka use :func:`subject_dn_from_der` on the binary certificate.
    """
    rdns = []
    for rdn in reversed(list(subject)):
        avas = []
        for name, value in rdn:
            keyword = _KEYWORDS.get(name)
            if keyword is not None:
                avas.append(f"{keyword}={_escape_value(value)}")
                continue
            oid, tag = _OTHER_ATTRIBUTES.get(name, (name, 0x0C))
            if not re.fullmatch(r"\d+(\.\d+)+", oid):
                raise ValueError(f"unknown certificate subject attribute {name!r}")
            avas.append(f"{oid}={_hex_value(tag, _encode_for_tag(tag, value))}")
        rdns.append("+".join(avas))
    return ",".join(rdns)


def subject_dn_from_der(certificate: bytes) -> str:
    """RFC 2253 subject DN of a DER certificate, as Java prints it.

    ``certificate`` is ``getpeercert(binary_form=True)``.
    """
    from cryptography import x509

    cert = x509.load_der_x509_certificate(certificate)
    rdns = []
    for rdn in reversed(list(cert.subject.rdns)):
        avas = []
        for attribute in rdn:
            oid = attribute.oid.dotted_string
            keyword = _KEYWORD_OIDS.get(oid)
            value = attribute.value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if keyword is not None:
                avas.append(f"{keyword}={_escape_value(value)}")
            else:
                asn1_type = getattr(attribute, "_type", None)  # the DER string type
                tag = int(asn1_type.value) if asn1_type is not None else 0x0C
                avas.append(f"{oid}={_hex_value(tag, _encode_for_tag(tag, value))}")
        rdns.append("+".join(avas))
    return ",".join(rdns)
