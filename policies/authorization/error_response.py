"""Responses for requests the gateway refuses, built from kio's message classes.

Two uses:

* :func:`whole_request_error_response` answers *any* API and version when a request
  is refused as a whole (an API without a handler, or a cluster-level check that
  failed). It walks the kio response class: every ``error_code`` it reaches gets the
  error, ``error_message`` gets a message, and everything else gets Kafka's default
  (zero, empty, null; ``throttle_time_ms`` 0). Where a response lists one entry per
  request entry (CreateAcls results per creation, ElectLeaders partitions per
  requested partition...), the entries are mirrored from the request, copying the
  fields that name them, as Kafka's own ``getErrorResponse`` does; clients match
  results to what they asked for and fail on a missing one.
* :func:`build_entity` builds one response entry (or body) with defaults for every
  field not given, so per-API handlers can write one call for all versions.

Mirroring is generic, guided by field names, with a few per-API adapters where the
response is not shaped like the request (see ``_SOURCE_ADAPTERS``) and a list of
APIs whose refusal Kafka reports with the top-level error alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal

from kio.schema.errors import ErrorCode

from codec.headers import peek_api
from codec.primitives import CodecError
from policies.authorization.messages import (
    MessageError,
    decode_request,
    encode_response,
    response_class,
)

__all__ = [
    "AUTHORIZATION_FAILED_MESSAGE",
    "build_entity",
    "element_type",
    "error_response_body",
    "kafka_error_message",
    "whole_request_error_response",
]

#: The message Kafka's controller gives a refused topic ("Authorization failed.").
AUTHORIZATION_FAILED_MESSAGE: Final = "Authorization failed."

#: Kafka's default messages (``Errors.message()``) for the codes the gateway answers.
_KAFKA_MESSAGES: Final[Mapping[int, str]] = {
    29: "Topic authorization failed.",
    30: "Group authorization failed.",
    31: "Cluster authorization failed.",
    42: (
        "This most likely occurs because of a request being malformed by the client "
        "library or the message was sent to an incompatible broker. See the broker logs "
        "for more details."
    ),
    53: "Transactional Id authorization failed.",
    100: "This server does not host this topic ID.",
}

#: APIs whose refusal Kafka reports only in the top-level error (in versions without
#: one, as an empty answer): entries are not mirrored.
_TOP_LEVEL_ONLY: Final = frozenset(
    {
        35,  # DescribeLogDirs: CLUSTER_AUTHORIZATION_FAILED top-level (v3+), no results
        46,  # ListPartitionReassignments
        48,  # DescribeClientQuotas
        55,  # DescribeQuorum: DescribeQuorumRequest.getTopLevelErrorResponse
        74,  # ListConfigResources
    }
)


def _alter_replica_log_dirs_source(request: Any) -> Mapping[str, Any]:
    """Results are per topic across all requested directories."""
    return {"results": tuple(topic for log_dir in request.dirs for topic in log_dir.topics)}


def _alter_user_scram_credentials_source(request: Any) -> Mapping[str, Any]:
    """One result per user named in deletions or upsertions, sorted (as Kafka does)."""
    users = {entry.name for entry in (*request.deletions, *request.upsertions)}
    return {"results": tuple(sorted(users))}


#: Request views for responses not shaped like their request.
_SOURCE_ADAPTERS: Final[Mapping[int, Callable[[Any], Mapping[str, Any]]]] = {
    34: _alter_replica_log_dirs_source,
    51: _alter_user_scram_credentials_source,
}

#: Other names under which a request carries the field that names a response entry.
_KEY_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "name": ("topic", "topic_name"),
    "topic": ("name", "topic_name"),
    "topic_name": ("name", "topic"),
    "partition_index": ("partition", "partition_id"),
    "partition": ("partition_index", "partition_id"),
    "partition_id": ("partition_index", "partition"),
    "user": ("name",),
}


def kafka_error_message(error_code: int) -> str:
    """Kafka's default message for ``error_code``, or :data:`AUTHORIZATION_FAILED_MESSAGE`."""
    return _KAFKA_MESSAGES.get(error_code, AUTHORIZATION_FAILED_MESSAGE)


def whole_request_error_response(
    frame: bytes,
    api_key: int,
    api_version: int,
    error_code: int,
    error_message: str = AUTHORIZATION_FAILED_MESSAGE,
) -> bytes | None:
    """A response frame refusing the request ``frame`` (header + body) as a whole.

    None if no response carrying the error can be built: an API or version kio does
    not know, or a response whose only error fields are in entries that could not be
    mirrored from the request. The caller then closes the connection.
    """
    try:
        correlation_id = peek_api(frame)[2]
    except CodecError:
        return None
    try:
        request: Any = decode_request(frame)[1]
    except MessageError:
        request = None  # still answerable when the response has a top-level error
    body = error_response_body(api_key, api_version, request, error_code, error_message)
    if body is None:
        return None
    try:
        return encode_response(correlation_id, api_key, api_version, body)
    except MessageError:
        return None


def error_response_body(
    api_key: int,
    api_version: int,
    request: Any | None,
    error_code: int,
    error_message: str = AUTHORIZATION_FAILED_MESSAGE,
) -> Any | None:
    """The kio response body of :func:`whole_request_error_response`, or None."""
    try:
        cls = response_class(api_key, api_version)
    except MessageError:
        return None
    error = _Error(ErrorCode(error_code), error_message)
    if api_key in _TOP_LEVEL_ONLY:
        return _mirror(cls, None, error)
    source: Any = request
    adapter = _SOURCE_ADAPTERS.get(api_key)
    if adapter is not None and request is not None:
        source = adapter(request)
    body = _mirror(cls, source, error)
    return body if _reports_refusal(body, source, error_code) else None


def build_entity(cls: type[Any], **values: Any) -> Any:
    """An instance of the kio class ``cls`` with ``values`` and defaults for the rest.

    Names ``cls`` lacks are ignored (one call serves every version of a message), and
    an int given for an ``error_code`` field becomes kio's ``ErrorCode``.
    """
    kwargs: dict[str, Any] = {}
    for spec in _fields(cls):
        if spec.name not in values:
            kwargs[spec.name] = _default(spec)
        elif spec.kafka_type == "error_code":
            kwargs[spec.name] = ErrorCode(values[spec.name])
        else:
            kwargs[spec.name] = values[spec.name]
    return cls(**kwargs)


def element_type(cls: type[Any], field_name: str) -> type[Any]:
    """The entry class of the array field ``field_name`` of the kio class ``cls``."""
    for spec in _fields(cls):
        if spec.name == field_name and spec.kind == "entity_array":
            return spec.inner
    raise KeyError(f"{cls.__name__} has no array of entities named {field_name!r}")


# --- Field introspection ----------------------------------------------------------

_Kind = Literal["scalar", "scalar_array", "entity", "entity_array"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kafka_type: str | None
    kind: _Kind
    #: The value type with ``None`` removed; for arrays, the element type.
    inner: type[Any]
    nullable: bool
    field: dataclasses.Field[Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Error:
    code: ErrorCode
    message: str


# Plain dicts rather than functools.cache: mypy does not take classes as Hashable.
_FIELDS: dict[type[Any], tuple[_Field, ...]] = {}
_CARRIES_ERROR: dict[type[Any], bool] = {}


def _fields(cls: type[Any]) -> tuple[_Field, ...]:
    described = _FIELDS.get(cls)
    if described is None:
        hints = typing.get_type_hints(cls)
        described = tuple(_describe(f, hints[f.name]) for f in dataclasses.fields(cls))
        _FIELDS[cls] = described
    return described


def _describe(field: dataclasses.Field[Any], annotation: Any) -> _Field:
    value_type, nullable = _strip_none(annotation)
    kafka_type = field.metadata.get("kafka_type")
    if typing.get_origin(value_type) is tuple:
        element, _ = _strip_none(typing.get_args(value_type)[0])
        kind: _Kind = "entity_array" if dataclasses.is_dataclass(element) else "scalar_array"
        return _Field(field.name, kafka_type, kind, element, nullable, field)
    kind = "entity" if dataclasses.is_dataclass(value_type) else "scalar"
    return _Field(field.name, kafka_type, kind, value_type, nullable, field)


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _carries_error_type(cls: type[Any]) -> bool:
    """Whether entries of ``cls`` (or entries nested in them) report an error."""
    carries = _CARRIES_ERROR.get(cls)
    if carries is None:
        carries = any(
            spec.kafka_type == "error_code"
            or (spec.kind in ("entity", "entity_array") and _carries_error_type(spec.inner))
            for spec in _fields(cls)
        )
        _CARRIES_ERROR[cls] = carries
    return carries


# --- Defaults ---------------------------------------------------------------------

_EPOCH: Final = datetime.datetime.fromtimestamp(0, datetime.UTC)

_DEFAULTS_BY_KAFKA_TYPE: Final[Mapping[str, Any]] = {
    "bool": False,
    "bytes": b"",
    "records": b"",
    "datetime_i64": _EPOCH,
    "error_code": ErrorCode.none,
    "float64": 0.0,
    "int8": 0,
    "int16": 0,
    "int32": 0,
    "int64": 0,
    "uint16": 0,
    "string": "",
    "timedelta_i32": datetime.timedelta(0),
    "timedelta_i64": datetime.timedelta(0),
    "uuid": uuid.UUID(int=0),
}


def _default(spec: _Field) -> Any:
    field = spec.field
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    if spec.kind in ("scalar_array", "entity_array"):
        return ()
    if spec.kind == "entity":
        return build_entity(spec.inner)
    if spec.nullable and spec.kafka_type != "uuid":
        return None
    return _DEFAULTS_BY_KAFKA_TYPE[spec.kafka_type or ""]


# --- Mirroring --------------------------------------------------------------------

_NOTHING: Final = object()


def _mirror(cls: type[Any], source: Any, error: _Error) -> Any:
    """An instance of ``cls`` reporting ``error``, with entries mirrored from ``source``.

    ``source`` is the matching part of the request: a kio entity, a mapping (from an
    adapter), a bare value (an entry of a primitive array, e.g. a partition index),
    or None.
    """
    if source is None or isinstance(source, Mapping) or dataclasses.is_dataclass(source):
        attrs = _attributes(source)
    else:
        attrs = _keyed_by_first_matching_field(cls, source)
    kwargs = {spec.name: _mirrored_value(spec, attrs, error) for spec in _fields(cls)}
    return cls(**kwargs)


def _mirrored_value(spec: _Field, attrs: Mapping[str, Any], error: _Error) -> Any:
    if spec.kafka_type == "error_code":
        return error.code
    if spec.name == "error_message" and spec.kafka_type == "string":
        return error.message
    if spec.kind == "entity_array":
        entries = _counterpart_entries(spec, attrs)
        return tuple(_mirror(spec.inner, entry, error) for entry in entries)
    if spec.kind == "entity":
        nested = attrs.get(spec.name)
        return _mirror(spec.inner, nested if dataclasses.is_dataclass(nested) else None, error)
    if spec.kind == "scalar":
        for name in (spec.name, *_KEY_ALIASES.get(spec.name, ())):
            value = _coerce(attrs.get(name, _NOTHING), spec)
            if value is not _NOTHING:
                return value
    return _default(spec)


def _counterpart_entries(spec: _Field, attrs: Mapping[str, Any]) -> tuple[Any, ...]:
    """The request entries a response array mirrors, or () if it mirrors none.

    An array of the same name is used when its entries report errors or are fully
    named by the request entries (AlterClientQuotas' entity lists). Otherwise an
    error-reporting array pairs with the request's only array (CreateAcls results
    with creations, DeleteAcls filter results with filters...).
    """
    arrays = {name: value for name, value in attrs.items() if _is_array(value)}
    reports_errors = _carries_error_type(spec.inner)
    if spec.name in arrays:
        entries = tuple(arrays[spec.name] or ())
        if reports_errors or all(_names_all_fields(spec.inner, entry) for entry in entries):
            return entries
        return ()
    if reports_errors and len(arrays) == 1:
        (only,) = arrays.values()
        return tuple(only or ())
    return ()


def _names_all_fields(cls: type[Any], entry: Any) -> bool:
    present = _attributes(entry)
    return all(spec.name in present for spec in _fields(cls))


def _keyed_by_first_matching_field(cls: type[Any], value: Any) -> Mapping[str, Any]:
    """A bare request value names the first response field of its kind."""
    for spec in _fields(cls):
        if spec.kind != "scalar" or spec.kafka_type == "error_code":
            continue
        if _coerce(value, spec) is not _NOTHING:
            return {spec.name: value}
    return {}


def _attributes(source: Any) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if dataclasses.is_dataclass(source) and not isinstance(source, type):
        attrs = {f.name: getattr(source, f.name) for f in dataclasses.fields(source)}
        # A null array (e.g. "all topics") is still an array: keep it pairable.
        for spec in _fields(type(source)):
            if spec.kind in ("scalar_array", "entity_array") and attrs[spec.name] is None:
                attrs[spec.name] = ()
        return attrs
    return {}


def _is_array(value: Any) -> bool:
    return isinstance(value, tuple | list)


def _coerce(value: Any, spec: _Field) -> Any:
    """``value`` if it fits the scalar field ``spec``, else ``_NOTHING``."""
    if value is _NOTHING:
        return _NOTHING
    if value is None:
        return None if spec.nullable else _NOTHING
    inner = spec.inner
    if issubclass(inner, bool):
        return value if isinstance(value, bool) else _NOTHING
    if issubclass(inner, int):
        if not isinstance(value, int) or isinstance(value, bool):
            return _NOTHING
        low, high = getattr(inner, "__low__", None), getattr(inner, "__high__", None)
        if (low is not None and value < low) or (high is not None and value > high):
            return _NOTHING
        return value
    for kind in (str, bytes, float, uuid.UUID, datetime.timedelta, datetime.datetime):
        if issubclass(inner, kind):
            return value if isinstance(value, kind) else _NOTHING
    return _NOTHING


def _reports_refusal(body: Any, source: Any, error_code: int) -> bool:
    """Whether ``body`` is a truthful answer to the refused request ``source``.

    It is if it carries the error somewhere, or if the request named nothing (an
    empty answer is Kafka's too), or if every entry the request named is mirrored
    and merely has no sub-entries to carry the error (a topic with no partitions).
    """
    if _carries(body, error_code):
        return True
    if source is None:
        return False
    return not _has_entries(source) or _has_entries(body)


def _carries(body: Any, error_code: int) -> bool:
    """Whether any ``error_code`` field in ``body`` holds ``error_code``."""
    return any(value == error_code for value in _error_codes(body))


def _error_codes(entity: Any) -> Iterator[int]:
    for spec in _fields(type(entity)):
        value = getattr(entity, spec.name)
        if spec.kafka_type == "error_code":
            yield int(value)
        elif spec.kind == "entity" and value is not None:
            yield from _error_codes(value)
        elif spec.kind == "entity_array" and value:
            for entry in value:
                yield from _error_codes(entry)


def _has_entries(source: Any) -> bool:
    """Whether the request names anything: a non-empty array at its top level."""
    return any(_is_array(value) and len(value) > 0 for value in _attributes(source).values())
