"""Preloading the checked-request decoders: after it, no request of a supported API
version loads a schema module or compiles a walk on the event loop."""

from __future__ import annotations

from codec import bounded
from codec.api_versions import gateway_version_ranges
from policies.authorization import messages


def test_preload_prepares_every_supported_request_version() -> None:
    versions = gateway_version_ranges()
    prepared = messages.preload_request_decoders(versions)
    expected = [
        messages.request_class(key, version)
        for key, (low, high) in versions.items()
        for version in range(low, high + 1)
        if _has_schema(key, version)
    ]
    assert prepared == len(expected) > 200
    assert all(cls in bounded._WALKS for cls in expected)
    assert all(cls in messages._READERS for cls in expected)


def _has_schema(api_key: int, version: int) -> bool:
    try:
        messages.request_class(api_key, version)
    except messages.MessageError:
        return False
    return True
