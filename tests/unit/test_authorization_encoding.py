"""The fast entity writer (policies/authorization/encoding.py) is byte-identical to kio.

Every request and response class of every API kio knows (oldest and newest
version, and the first flexible one) is drawn with hypothesis, tagged fields
included, and encoded by both writers.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_writer
from kio.static.primitive import Records

from codec.api_table import API_TABLE
from policies.authorization import encoding

st.register_type_strategy(Records, st.binary(max_size=16).map(Records))


def _classes() -> list[type[Any]]:
    found: list[type[Any]] = []
    for key in sorted(API_TABLE):
        versions = []
        for version in range(0, 20):
            try:
                load_response_schema(key, version)
            except Exception:
                continue
            versions.append(version)
        if not versions:
            continue
        flexible = [
            v for v in versions if getattr(load_response_schema(key, v), "__flexible__", False)
        ]
        for version in sorted({versions[0], versions[-1], *flexible[:1]}):
            for load in (load_request_schema, load_response_schema):
                try:
                    found.append(load(key, version))
                except Exception:
                    continue
    return found


def _kio(entity: Any) -> bytes:
    out = io.BytesIO()
    entity_writer(type(entity))(out, entity)
    return out.getvalue()


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: f"{c.__module__[12:]}")
def test_fast_writer_matches_kio(cls: type[Any]) -> None:
    @settings(
        max_examples=3,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(st.from_type(cls))
    def check(entity: Any) -> None:
        try:
            expected = _kio(entity)
        except Exception:  # a value kio cannot encode: the fast writer refuses too
            with pytest.raises(Exception):  # noqa: B017
                encoding.encode_entity(entity)
            return
        assert encoding.encode_entity(entity) == expected

    check()


def test_a_repeated_entity_object_is_encoded_once_and_written_each_time() -> None:
    cls = load_response_schema(42, 2)  # DeleteGroups v2
    result_cls = cls.__dataclass_fields__["results"].type.__args__[0]
    from kio.schema.errors import ErrorCode

    refused = result_cls(group_id="g", error_code=ErrorCode.group_authorization_failed)
    body = cls(throttle_time=__import__("datetime").timedelta(0), results=(refused,) * 1000)
    assert encoding.encode_entity(body) == _kio(body)
