"""ApiVersions responses (API key 18, v0-4): parse, re-encode, intersect, refuse.

Every client connection starts with ApiVersions, and the gateway must answer
the intersection of what the broker and the gateway support. The codec is
hand-written rather than kio because kio refuses unknown tagged fields, and a
newer broker's ApiVersions response carries tagged fields (supported/finalized
features, ...) that must reach the client untouched. Tagged sections are kept
as raw bytes, so an unchanged response re-encodes byte for byte.

Body layout (after the v0 response header, which ApiVersions always uses):
``error_code int16, api_keys [api_key, min, max (+tags v3+)], throttle_time_ms
int32 (v1+), tagged fields (v3+)``; v3+ use compact arrays.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Final

from codec.api_table import API_TABLE
from codec.primitives import (
    EMPTY_TAGGED_FIELDS,
    Buffer,
    CodecError,
    Reader,
    enc_array_length,
)

API_VERSIONS_KEY: Final = 18
UNSUPPORTED_VERSION: Final = 35
_FIRST_FLEXIBLE: Final = 3
_MAX_VERSION: Final = 4

_RANGE: Final = struct.Struct(">hhh")
_INT16: Final = struct.Struct(">h")
_INT32: Final = struct.Struct(">i")

DECODED_API_CAPS: Final[dict[int, tuple[int, int]]] = {
    0: (0, 13),  # Produce: the request scanner handles v0-13. The minimum stays 0 although
    #              Kafka 4 dropped v0-2, because old librdkafka needs them for compressed
    #              batches (KAFKA-18659; Kroxylicious does the same).
    1: (4, 18),  # Fetch: node_endpoints walker knows v16-18.
    3: (0, 13),  # Metadata: broker rewrite and topic-id map know v0-13.
    10: (0, 6),  # FindCoordinator.
    17: (0, 1),  # SaslHandshake.
    18: (0, _MAX_VERSION),  # ApiVersions: this module.
    36: (0, 2),  # SaslAuthenticate.
    60: (0, 2),  # DescribeCluster.
    78: (1, 2),  # ShareFetch: node_endpoints rewrite knows v0-2 (v0 was 4.0 early access).
    79: (1, 2),  # ShareAcknowledge: likewise.
}
"""Version ranges of the APIs whose bodies the gateway decodes.

Advertising a newer version than a decoder knows would let clients send (or
brokers answer) a layout the gateway cannot read - and for address-carrying
responses that means leaking broker addresses - so these replace the kio table's
ranges (the maximum is also capped by the table).
"""


@dataclass(slots=True)
class ApiVersionRange:
    api_key: int
    min_version: int
    max_version: int
    #: Raw tagged-field section of this entry (v3+), ``b""`` when it has none.
    tagged_fields: bytes = b""


@dataclass(frozen=True, slots=True)
class ApiVersionsResponse:
    error_code: int
    api_keys: list[ApiVersionRange]
    throttle_time_ms: int = 0
    #: Raw top-level tagged-field section (v3+: supported_features, finalized
    #: features...), ``b""`` when it has none. Kept verbatim.
    tagged_fields: bytes = b""
    #: The body was in v0 format although a newer version was requested: what a
    #: broker sends when it refuses the request's version (see ``parse``).
    v0_fallback: bool = field(default=False, compare=False)


def parse_api_versions_response(body: Buffer, version: int) -> ApiVersionsResponse:
    """Parse an ApiVersions response body.

    Like Kafka's own client, falls back to v0 when the body does not parse at
    the requested version: a broker answers a too-new ApiVersions request with
    a v0 body (error 35 and its supported range).
    """
    if not 0 <= version <= _MAX_VERSION:
        raise CodecError(f"ApiVersions response v{version} is not supported (0-4)")
    try:
        return _parse(body, version)
    except CodecError:
        if version == 0:
            raise
    return replace(_parse(body, 0), v0_fallback=True)


def _parse(body: Buffer, version: int) -> ApiVersionsResponse:
    flexible = version >= _FIRST_FLEXIBLE
    r = Reader(body)
    error_code = r.int16()
    count = r.array_length(flexible)
    if count < 0:
        raise CodecError(f"ApiVersions api_keys array is null (length {count})")
    api_keys = [_parse_range(r, flexible) for _ in range(count)]
    throttle_time_ms = r.int32() if version >= 1 else 0
    tagged = _raw_tagged_fields(r) if flexible else b""
    if r.pos != len(body):
        raise CodecError(f"{len(body) - r.pos} unexpected bytes after ApiVersions v{version}")
    return ApiVersionsResponse(error_code, api_keys, throttle_time_ms, tagged)


def _parse_range(r: Reader, flexible: bool) -> ApiVersionRange:
    r.skip(6, "api version range")
    api_key, lo, hi = _RANGE.unpack_from(r.buf, r.pos - 6)
    return ApiVersionRange(api_key, lo, hi, _raw_tagged_fields(r) if flexible else b"")


def _raw_tagged_fields(r: Reader) -> bytes:
    """The tagged-field section at the cursor as raw bytes; ``b""`` if it is empty."""
    start = r.pos
    if start < r.end and r.buf[start] == 0:  # the usual empty section
        r.pos += 1
        return b""
    r.skip_tagged_fields()
    return bytes(r.buf[start : r.pos])


def encode_api_versions_response(resp: ApiVersionsResponse, version: int) -> bytes:
    """Encode a response body; v0 format if it was parsed as a v0 fallback."""
    if resp.v0_fallback:
        version = 0
    if not 0 <= version <= _MAX_VERSION:
        raise ValueError(f"ApiVersions v{version} is not supported (0-4)")
    flexible = version >= _FIRST_FLEXIBLE
    parts = [_INT16.pack(resp.error_code), enc_array_length(len(resp.api_keys), flexible)]
    for entry in resp.api_keys:
        parts.append(_RANGE.pack(entry.api_key, entry.min_version, entry.max_version))
        if flexible:
            parts.append(entry.tagged_fields or EMPTY_TAGGED_FIELDS)
    if version >= 1:
        parts.append(_INT32.pack(resp.throttle_time_ms))
    if flexible:
        parts.append(resp.tagged_fields or EMPTY_TAGGED_FIELDS)
    return b"".join(parts)


def intersect_api_versions(
    upstream: list[ApiVersionRange], gateway_ranges: dict[int, tuple[int, int]]
) -> list[ApiVersionRange]:
    """What the gateway can advertise: per key, the overlap of broker and gateway ranges.

    Keys the gateway does not know are dropped (it could not even frame their
    headers correctly), as are keys whose ranges do not overlap. Upstream order
    and per-entry tagged fields are kept.
    """
    out: list[ApiVersionRange] = []
    for entry in upstream:
        ours = gateway_ranges.get(entry.api_key)
        if ours is None:
            continue
        lo, hi = max(entry.min_version, ours[0]), min(entry.max_version, ours[1])
        if lo <= hi:
            out.append(ApiVersionRange(entry.api_key, lo, hi, entry.tagged_fields))
    return out


def gateway_version_ranges() -> dict[int, tuple[int, int]]:
    """The gateway's supported range per API key: kio's table, capped per ``DECODED_API_CAPS``."""
    ranges: dict[int, tuple[int, int]] = {}
    for key, (_name, lo, hi, _flexible) in API_TABLE.items():
        cap = DECODED_API_CAPS.get(key)
        ranges[key] = (lo, hi) if cap is None else (cap[0], min(hi, cap[1]))
    return ranges


def unsupported_version_response(correlation_id: int, gateway_min: int, gateway_max: int) -> bytes:
    """Frame content (no size prefix) answering an ApiVersions request that is too new.

    Matches the broker (KIP-511): a response header v0 and a **v0** body, since
    the client cannot be assumed to parse anything newer, with error 35
    UNSUPPORTED_VERSION and ``api_keys`` holding only ApiVersions with the
    supported range, so the client retries at the highest version it shares.
    """
    return b"".join(
        (
            _INT32.pack(correlation_id),
            _INT16.pack(UNSUPPORTED_VERSION),
            _INT32.pack(1),
            _RANGE.pack(API_VERSIONS_KEY, gateway_min, gateway_max),
        )
    )
