"""A cheap validating walk over a request or response body, run before kio decodes it.

kio's native (Rust) reader reserves memory for an array's claimed element count
before reading a single element: a 20-byte Metadata request whose compact topic
array claims 2^35-2 elements makes it ask for 256 GiB, and the Rust runtime then
aborts the whole process (no ``except`` can catch that). So no length or count
from a client or a broker may reach kio before it was checked against the bytes
actually left. This module walks a body exactly as kio will read it and checks:

* every array count: ``count * minimal element size <= bytes left``
  (elements of minimal size 0 count as 1 byte, so a count never exceeds the bytes left);
* every string / bytes / records length: ``length <= bytes left``;
* varint widths (at most 5 bytes, as in Kafka) and values;
* tagged fields: count, tag sizes within the bytes left, and a known tag's value
  read inside its declared size and filling it exactly;
* nullable-struct markers (-1 or 1), negative legacy lengths other than -1;
* that a null is only sent where the schema allows one (Kafka's own broker
  rejects a null in a non-nullable field; kio would hand ``None`` to code that
  expects a tuple or a string).

The walk plan is compiled once per kio entity class from the class itself
(dataclass fields, their ``kafka_type``/``tag`` metadata and type hints, the same
facts kio's reader is built from), so the walk follows exactly the shape kio will
read, and cached. Nesting depth is a property of the schema, not of the input
(no Kafka message type is recursive): it is bounded when the plan is compiled.

Shapes: :func:`check_body` ``(cls, buf, offset) -> end offset`` raises
:class:`BoundsError` (a :class:`CodecError`) naming the field path, e.g.
``field topics is null but not nullable`` or
``field topics[0].partitions: 34359738366 elements of at least 4 bytes exceed the 9 bytes left``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Final

from codec.primitives import Buffer, CodecError

__all__ = ["MAX_SCHEMA_DEPTH", "BoundsError", "check_body", "entity_plan"]

#: No Kafka message nests structs deeper than this (the deepest today is 5).
MAX_SCHEMA_DEPTH: Final = 16

#: Width in bytes of kio's fixed-size primitive types.
_FIXED_SIZES: Final[dict[str, int]] = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "error_code": 2,
    "int32": 4,
    "uint32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "uint64": 8,
    "timedelta_i64": 8,
    "datetime_i64": 8,
    "float64": 8,
    "uuid": 16,
}
_LENGTH_PREFIXED: Final = frozenset({"string", "bytes", "records"})


class BoundsError(CodecError):
    """A body kio must not be given: says which field and what was wrong.

    ``path`` is filled in from the innermost field outwards while the walk unwinds.
    """

    def __init__(self, problem: str, null: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.null = null
        self.path: list[str] = []

    def __str__(self) -> str:
        if not self.path:
            return self.problem
        path = "".join(
            part if part.startswith("[") else f".{part}" for part in reversed(self.path)
        ).lstrip(".")
        if self.null:
            return f"field {path} is null but not nullable"
        return f"field {path}: {self.problem}"


#: ``step(buf, pos, end) -> new pos``: reads one field (or a run of fixed fields).
Step = Callable[[Buffer, int, int], int]


def _truncated(what: str, need: int, pos: int, end: int) -> BoundsError:
    return BoundsError(f"{what} needs {need} bytes at offset {pos}, {end - pos} left")


def _uvarint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """``(value, new pos)`` of an unsigned varint of at most 5 bytes (Kafka's limit)."""
    if pos >= end:
        raise _truncated("varint", 1, pos, end)
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    p = pos + 1
    while True:
        if p >= end:
            raise BoundsError(f"truncated varint at offset {pos}")
        byte = buf[p]
        p += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, p
        shift += 7
        if shift >= 35:
            raise BoundsError(f"varint longer than 5 bytes at offset {pos}")


def _int16(buf: Buffer, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise _truncated("int16 length", 2, pos, end)
    return int.from_bytes(buf[pos : pos + 2], "big", signed=True)


def _int32(buf: Buffer, pos: int, end: int) -> int:
    if pos + 4 > end:
        raise _truncated("int32 length", 4, pos, end)
    return int.from_bytes(buf[pos : pos + 4], "big", signed=True)


# --- steps ------------------------------------------------------------------------------


def _skip_step(size: int) -> Step:
    def skip(buf: Buffer, pos: int, end: int) -> int:
        if pos + size > end:
            raise _truncated("field", size, pos, end)
        return pos + size

    return skip


def _null(nullable: bool) -> None:
    if not nullable:
        raise BoundsError("null", null=True)


def _length_step(flexible: bool, wide: bool, nullable: bool) -> Step:
    """A string, bytes or records field: compact (varint length + 1) or int16/int32 length."""
    if flexible:

        def compact(buf: Buffer, pos: int, end: int) -> int:
            if pos < end and buf[pos] < 0x80:  # fast path: a one-byte length
                n = buf[pos]
                pos += 1
            else:
                n, pos = _uvarint(buf, pos, end)
            if n == 0:
                _null(nullable)
                return pos
            if pos + n - 1 > end:
                raise BoundsError(f"length {n - 1} exceeds the {end - pos} bytes left")
            return pos + n - 1

        return compact
    read_length = _int32 if wide else _int16

    def legacy(buf: Buffer, pos: int, end: int) -> int:
        n = read_length(buf, pos, end)
        pos += 4 if wide else 2
        if n < 0:
            if n != -1:
                raise BoundsError(f"negative length {n}")
            _null(nullable)
            return pos
        if pos + n > end:
            raise BoundsError(f"length {n} exceeds the {end - pos} bytes left")
        return pos + n

    return legacy


def _array_step(flexible: bool, nullable: bool, element: Step, min_size: int, fixed: bool) -> Step:
    per_element = max(min_size, 1)

    def array(buf: Buffer, pos: int, end: int) -> int:
        if flexible:
            n, pos = _uvarint(buf, pos, end)
            count = n - 1
        else:
            count = _int32(buf, pos, end)
            pos += 4
            if count < -1:
                raise BoundsError(f"negative array length {count}")
        if count == -1:
            _null(nullable)
            return pos
        if count * per_element > end - pos:
            left = end - pos
            raise BoundsError(
                f"{count} elements of at least {per_element} bytes exceed the {left} bytes left"
            )
        if fixed:
            return pos + count * min_size
        index = 0
        try:
            for index in range(count):  # noqa: B007 - index names the element on error
                pos = element(buf, pos, end)
        except BoundsError as exc:
            exc.path.append(f"[{index}]")
            raise
        return pos

    return array


def _nullable_entity_step(entity: Step) -> Step:
    """KIP-893 nullable struct: an int8 marker, -1 for null, 1 for a value."""

    def marked(buf: Buffer, pos: int, end: int) -> int:
        if pos >= end:
            raise _truncated("struct marker", 1, pos, end)
        marker = buf[pos]
        if marker == 0xFF:
            return pos + 1
        if marker != 1:
            raise BoundsError(f"struct marker {marker} is neither -1 nor 1")
        return entity(buf, pos + 1, end)

    return marked


# --- plans ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    step: Step
    min_size: int
    #: Bytes always read, if the field has a fixed width; else None.
    fixed: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class EntityPlan:
    """How to walk one kio entity class: its body fields, then (flexible) its tags."""

    name: str
    steps: tuple[tuple[str, Step], ...]
    tagged: dict[int, tuple[str, Step]]
    flexible: bool
    min_size: int
    fixed: int | None
    depth: int
    walk: Step


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in (
        typing.get_args(hint)
    )


def _strip_optional(hint: Any) -> Any:
    if _optional(hint):
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return inner
    return hint


def _array_element(hint: Any) -> Any | None:
    """The element type of ``tuple[X, ...]`` (possibly ``| None``), else None."""
    inner = _strip_optional(hint)
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def _value_plan(
    field: dataclasses.Field[Any], hint: Any, flexible: bool, is_tag: bool
) -> tuple[Step, int, int | None, int]:
    """``(step, min size, fixed size or None, struct nesting depth)`` for one field's value."""
    nullable = _optional(hint)
    element = _array_element(hint)
    if element is not None:
        if dataclasses.is_dataclass(element):
            inner = entity_plan(element)
            elem_step, elem_min, elem_fixed, inner_depth = (
                inner.walk,
                inner.min_size,
                inner.fixed,
                inner.depth,
            )
        else:
            kafka_type = field.metadata["kafka_type"]
            elem_step, elem_min, elem_fixed = _primitive(kafka_type, flexible, nullable=False)
            inner_depth = 0
        step = _array_step(flexible, nullable, elem_step, elem_min, elem_fixed is not None)
        return step, 1 if flexible else 4, None, inner_depth
    target = _strip_optional(hint)
    if dataclasses.is_dataclass(target):
        inner = entity_plan(target)
        if nullable and not is_tag:  # kio reads tagged structs without the marker
            return _nullable_entity_step(inner.walk), 1, None, inner.depth
        return inner.walk, inner.min_size, inner.fixed, inner.depth
    step, min_size, fixed = _primitive(field.metadata["kafka_type"], flexible, nullable)
    return step, min_size, fixed, 0


def _primitive(kafka_type: str, flexible: bool, nullable: bool) -> tuple[Step, int, int | None]:
    size = _FIXED_SIZES.get(kafka_type)
    if size is not None:
        return _skip_step(size), size, size
    if kafka_type in _LENGTH_PREFIXED:
        wide = kafka_type != "string"
        step = _length_step(flexible, wide, nullable)
        return step, 1 if flexible else (4 if wide else 2), None
    raise TypeError(f"no bounded reader for kafka_type {kafka_type!r}")


def _merge_fixed(plans: list[_FieldPlan]) -> list[_FieldPlan]:
    """Consecutive fixed-width fields become one bounds check (fewer calls per entity)."""
    merged: list[_FieldPlan] = []
    for plan in plans:
        last = merged[-1] if merged else None
        if plan.fixed is not None and last is not None and last.fixed is not None:
            size = last.fixed + plan.fixed
            merged[-1] = _FieldPlan(f"{last.name}..{plan.name}", _skip_step(size), size, size)
        else:
            merged.append(plan)
    return merged


_PLANS: dict[Any, EntityPlan] = {}


def entity_plan(cls: Any) -> EntityPlan:
    """The walk plan of a kio entity class, compiled once."""
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _compile(cls)
    return plan


def _compile(cls: Any) -> EntityPlan:
    flexible = bool(getattr(cls, "__flexible__", False))
    hints = typing.get_type_hints(cls)
    body: list[_FieldPlan] = []
    tagged: dict[int, tuple[str, Step]] = {}
    deepest = 1
    for field in dataclasses.fields(cls):
        tag = field.metadata.get("tag")
        step, min_size, fixed, inner_depth = _value_plan(
            field, hints[field.name], flexible, tag is not None
        )
        deepest = max(deepest, inner_depth + 1)
        if deepest > MAX_SCHEMA_DEPTH:
            raise TypeError(f"{cls.__name__} nests deeper than {MAX_SCHEMA_DEPTH}")
        if tag is not None:
            tagged[int(tag)] = (field.name, step)
        else:
            body.append(_FieldPlan(field.name, step, min_size, fixed))
    merged = _merge_fixed(body)
    min_size = sum(p.min_size for p in merged) + (1 if flexible else 0)
    fixed = None if flexible or any(p.fixed is None for p in merged) else min_size
    steps = tuple((p.name, p.step) for p in merged)
    walk = _entity_walk(steps, tagged, flexible)
    return EntityPlan(cls.__name__, steps, tagged, flexible, min_size, fixed, deepest, walk)


def _entity_walk(
    steps: tuple[tuple[str, Step], ...], tagged: dict[int, tuple[str, Step]], flexible: bool
) -> Step:
    def walk(buf: Buffer, pos: int, end: int) -> int:
        name = ""
        try:
            for name, step in steps:  # noqa: B007 - name tells which field failed
                pos = step(buf, pos, end)
        except BoundsError as exc:
            exc.path.append(name)
            raise
        if flexible:
            if pos < end and buf[pos] == 0:  # no tagged fields: the usual case, inlined
                return pos + 1
            pos = _walk_tags(buf, pos, end, tagged)  # names a known tag's field itself
        return pos

    return walk


def _walk_tags(buf: Buffer, pos: int, end: int, tagged: dict[int, tuple[str, Step]]) -> int:
    if pos < end and buf[pos] == 0:  # fast path: no tagged fields, the usual case
        return pos + 1
    count, pos = _uvarint(buf, pos, end)
    if count * 2 > end - pos:  # a tag number and a size: at least one byte each
        raise BoundsError(f"{count} tagged fields exceed the {end - pos} bytes left")
    for _ in range(count):
        tag, pos = _uvarint(buf, pos, end)
        size, pos = _uvarint(buf, pos, end)
        if size > end - pos:
            raise BoundsError(f"tag {tag} size {size} exceeds the {end - pos} bytes left")
        known = tagged.get(tag)
        if known is not None:  # unknown tags: kio refuses them itself, after this walk
            name, step = known
            try:
                stop = step(buf, pos, pos + size)
                if stop != pos + size:  # kio would go on reading at a different offset
                    raise BoundsError(f"tagged value fills {stop - pos} of its {size} bytes")
            except BoundsError as exc:
                exc.path.append(name)
                raise
        pos += size
    return pos


def check_body(cls: type[Any], buf: Buffer, offset: int) -> int:
    """Walk the body of kio class ``cls`` at ``buf[offset:]``; return where it ends.

    Raises :class:`BoundsError` if kio must not be given these bytes. Bytes after
    the body are not looked at (kio ignores them too).
    """
    plan = _PLANS.get(cls) or entity_plan(cls)
    return plan.walk(buf, offset, len(buf))
