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
import struct
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


def _too_many(count: int, per_element: int, left: int) -> BoundsError:
    return BoundsError(
        f"{count} elements of at least {per_element} bytes exceed the {left} bytes left"
    )


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


_INT16: Final = struct.Struct(">h").unpack_from
_INT32: Final = struct.Struct(">i").unpack_from


# --- plans ------------------------------------------------------------------------------
#
# A plan is compiled once per class into the source of one Python function (as attrs and
# dataclasses generate their methods), so that walking an entity costs a few inline bounds
# checks per field instead of a closure call each: the walk runs before every checked
# request's decode and must cost a small fraction of it. Each field's code sits in its own
# ``try`` block (free in Python 3.11 until something raises) that adds the field's name to
# the error's path; arrays of structs call the element's function once per element.


@dataclasses.dataclass(frozen=True, slots=True)
class _Fixed:
    """Fixed-width bytes: one or more consecutive fixed-size fields (one bounds check)."""

    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Length:
    """A string, bytes or records field: compact (varint length + 1) or int16/int32 length."""

    flexible: bool
    wide: bool
    nullable: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _Array:
    flexible: bool
    nullable: bool
    element: _Value
    element_min: int
    element_fixed: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _Struct:
    plan: EntityPlan
    #: KIP-893 nullable struct: an int8 marker, -1 for null, 1 for a value.
    marker: bool


_Value = _Fixed | _Length | _Array | _Struct


class _Source:
    """The source of one generated walk function and the objects it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "BoundsError": BoundsError,
            "_too_many": _too_many,
            "_truncated": _truncated,
            "_uvarint": _uvarint,
            "_walk_tags": _walk_tags,
            "_INT16": _INT16,
            "_INT32": _INT32,
        }

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend(" " * indent + line for line in lines)

    def refer(self, obj: Any) -> str:
        name = f"_ref{len(self.namespace)}"
        self.namespace[name] = obj
        return name

    def function(self, name: str) -> Step:
        source = "\n".join(self.lines)
        exec(compile(source, f"<bounded walk {name}>", "exec"), self.namespace)
        walk: Step = self.namespace["walk"]
        walk.__qualname__ = walk.__name__ = f"walk_{name}"
        return walk


#: Arrays of structs have the element's code inline in their loop (no call per element)
#: while the loops of one function nest at most this deep (Python allows 20 nested blocks;
#: each loop takes 3: the field's ``try``, the element index's ``try``, the ``for``).
_MAX_INLINE_LOOPS: Final = 3


def _emit_value(src: _Source, value: _Value, indent: int, loops: int = 0) -> None:
    """Code that reads one value at ``pos`` (bounded by ``end``) and moves ``pos`` past it.

    ``loops``: how many loops enclose this code (each needs its own index variable).
    """
    add = src.add
    if isinstance(value, _Fixed):
        size = value.size
        add(indent, f"pos += {size}", "if pos > end:")
        add(indent + 4, f'raise _truncated("field", {size}, pos - {size}, end)')
    elif isinstance(value, _Length):
        _emit_length(src, value, indent)
    elif isinstance(value, _Array):
        _emit_array(src, value, indent, loops)
    elif value.marker:
        walk = src.refer(value.plan.walk)
        add(indent, "if pos >= end:")
        add(indent + 4, 'raise _truncated("struct marker", 1, pos, end)')
        add(indent, "n = buf[pos]", "if n == 255:", "    pos += 1", "elif n == 1:")
        add(indent + 4, f"pos = {walk}(buf, pos + 1, end)")
        add(indent, "else:", '    raise BoundsError(f"struct marker {n} is neither -1 nor 1")')
    else:
        add(indent, f"pos = {src.refer(value.plan.walk)}(buf, pos, end)")


def _emit_uvarint(src: _Source, target: str, indent: int) -> None:
    """``target, pos = uvarint at pos``, with the one-byte case inline."""
    src.add(indent, "if pos < end:")
    src.add(indent + 4, f"{target} = buf[pos]", "pos += 1", f"if {target} > 127:")
    src.add(indent + 8, f"{target}, pos = _uvarint(buf, pos - 1, end)")
    src.add(indent, "else:", f"    {target}, pos = _uvarint(buf, pos, end)  # raises")


def _emit_length(src: _Source, value: _Length, indent: int) -> None:
    add = src.add
    if value.flexible:
        _emit_uvarint(src, "n", indent)
        add(indent, "if n:", "    n -= 1", "    if pos + n > end:")
        add(indent + 8, 'raise BoundsError(f"length {n} exceeds the {end - pos} bytes left")')
        add(indent + 4, "pos += n")
        if not value.nullable:
            add(indent, "else:", '    raise BoundsError("null", null=True)')
        return
    width, read = (4, "_INT32") if value.wide else (2, "_INT16")
    add(indent, f"if pos + {width} > end:")
    add(indent + 4, f'raise _truncated("int{width * 8} length", {width}, pos, end)')
    add(indent, f"n = {read}(buf, pos)[0]", f"pos += {width}")
    add(indent, "if n >= 0:", "    if pos + n > end:")
    add(indent + 8, 'raise BoundsError(f"length {n} exceeds the {end - pos} bytes left")')
    add(indent + 4, "pos += n")
    add(indent, "elif n != -1:", '    raise BoundsError(f"negative length {n}")')
    if not value.nullable:
        add(indent, "else:", '    raise BoundsError("null", null=True)')


def _emit_array(src: _Source, value: _Array, indent: int, loops: int) -> None:
    add = src.add
    if value.flexible:
        _emit_uvarint(src, "c", indent)
        add(indent, "c -= 1")
    else:
        add(indent, "if pos + 4 > end:", '    raise _truncated("int32 length", 4, pos, end)')
        add(indent, "c = _INT32(buf, pos)[0]", "pos += 4", "if c < -1:")
        add(indent + 4, 'raise BoundsError(f"negative array length {c}")')
    per_element = max(value.element_min, 1)
    add(indent, "if c > 0:", f"    if c * {per_element} > end - pos:")
    add(indent + 8, f"raise _too_many(c, {per_element}, end - pos)")
    if value.element_fixed:
        add(indent + 4, f"pos += c * {value.element_min}")
    else:
        index = f"i{loops}"
        add(indent + 4, f"{index} = 0", "try:", f"    for {index} in range(c):")
        element = value.element
        if not isinstance(element, _Struct) or element.marker:
            _emit_value(src, element, indent + 12, loops + 1)
        elif loops + 1 + element.plan.loops <= _MAX_INLINE_LOOPS:
            _emit_entity_body(src, element.plan, indent + 12, loops + 1)
        else:
            add(indent + 12, f"pos = {src.refer(element.plan.walk)}(buf, pos, end)")
        add(indent + 4, "except BoundsError as exc:")
        add(indent + 8, f'exc.path.append(f"[{{{index}}}]")', "raise")
    if not value.nullable:
        add(indent, "elif c == -1:", '    raise BoundsError("null", null=True)')


def _value_function(value: _Value, name: str) -> Step:
    """A walk function reading just one value (a tagged field's)."""
    src = _Source()
    src.add(0, "def walk(buf, pos, end):")
    _emit_value(src, value, 4)
    src.add(4, "return pos")
    return src.function(name)


def _emit_entity_body(src: _Source, plan: EntityPlan, indent: int, loops: int) -> None:
    """Code that walks one entity at ``pos``: each field in a ``try`` naming it, then tags."""
    for field_name, value in plan.fields:
        src.add(indent, "try:")
        _emit_value(src, value, indent + 4, loops)
        src.add(indent, "except BoundsError as exc:", f"    exc.path.append({field_name!r})")
        src.add(indent + 4, "raise")
    if plan.flexible:
        src.add(indent, "if pos < end and buf[pos] == 0:  # no tagged fields: the usual case")
        src.add(indent, "    pos += 1", "else:")
        src.add(indent + 4, f"pos = _walk_tags(buf, pos, end, {src.refer(plan.tagged)})")


def _loops(fields: list[tuple[str, _Value]]) -> int:
    """How deep the loops of an entity's generated code nest (elements inlined)."""
    deepest = 0
    for _, value in fields:
        if isinstance(value, _Array) and not value.element_fixed:
            element = value.element
            inner = 0
            if isinstance(element, _Struct) and not element.marker:
                inner = element.plan.loops
                if 1 + inner > _MAX_INLINE_LOOPS:
                    inner = 0  # called, not inlined
            deepest = max(deepest, 1 + inner)
    return deepest


def _unset_walk(buf: Buffer, pos: int, end: int) -> int:
    raise AssertionError("plan not compiled yet")


@dataclasses.dataclass(frozen=True, slots=True)
class EntityPlan:
    """How to walk one kio entity class: its body fields, then (flexible) its tags."""

    name: str
    tagged: dict[int, tuple[str, Step]]
    flexible: bool
    min_size: int
    fixed: int | None
    depth: int
    #: Body fields in order (consecutive fixed-width fields merged into one).
    fields: tuple[tuple[str, _Value], ...]
    #: How deep the loops of the generated code nest.
    loops: int
    walk: Step = dataclasses.field(default=_unset_walk)
    #: The generated function's source, for reading and debugging.
    source: str = ""


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
) -> tuple[_Value, int, int | None, int]:
    """``(value, min size, fixed size or None, struct nesting depth)`` for one field's value."""
    nullable = _optional(hint)
    element = _array_element(hint)
    if element is not None:
        elem: _Value
        if dataclasses.is_dataclass(element):
            inner = entity_plan(element)
            elem, elem_min, elem_fixed, inner_depth = (
                _Struct(inner, marker=False),
                inner.min_size,
                inner.fixed,
                inner.depth,
            )
        else:
            kafka_type = field.metadata["kafka_type"]
            elem, elem_min, elem_fixed = _primitive(kafka_type, flexible, nullable=False)
            inner_depth = 0
        array = _Array(flexible, nullable, elem, elem_min, elem_fixed is not None)
        return array, 1 if flexible else 4, None, inner_depth
    target = _strip_optional(hint)
    if dataclasses.is_dataclass(target):
        inner = entity_plan(target)
        if nullable and not is_tag:  # kio reads tagged structs without the marker
            return _Struct(inner, marker=True), 1, None, inner.depth
        if inner.fixed is not None:
            return _Fixed(inner.fixed), inner.min_size, inner.fixed, inner.depth
        return _Struct(inner, marker=False), inner.min_size, None, inner.depth
    value, min_size, fixed = _primitive(field.metadata["kafka_type"], flexible, nullable)
    return value, min_size, fixed, 0


def _primitive(kafka_type: str, flexible: bool, nullable: bool) -> tuple[_Value, int, int | None]:
    size = _FIXED_SIZES.get(kafka_type)
    if size is not None:
        return _Fixed(size), size, size
    if kafka_type in _LENGTH_PREFIXED:
        wide = kafka_type != "string"
        return _Length(flexible, wide, nullable), 1 if flexible else (4 if wide else 2), None
    raise TypeError(f"no bounded reader for kafka_type {kafka_type!r}")


def _merge_fixed(fields: list[tuple[str, _Value]]) -> list[tuple[str, _Value]]:
    """Consecutive fixed-width fields become one bounds check."""
    merged: list[tuple[str, _Value]] = []
    for name, value in fields:
        last = merged[-1] if merged else None
        if isinstance(value, _Fixed) and last is not None and isinstance(last[1], _Fixed):
            merged[-1] = (f"{last[0]}..{name}", _Fixed(last[1].size + value.size))
        else:
            merged.append((name, value))
    return merged


_PLANS: dict[Any, EntityPlan] = {}
#: ``cls -> plan.walk``: one dict lookup per checked body.
_WALKS: dict[Any, Step] = {}


def entity_plan(cls: Any) -> EntityPlan:
    """The walk plan of a kio entity class, compiled once."""
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _compile(cls)
        _WALKS[cls] = plan.walk
    return plan


def _compile(cls: Any) -> EntityPlan:
    flexible = bool(getattr(cls, "__flexible__", False))
    hints = typing.get_type_hints(cls)
    body: list[tuple[str, _Value]] = []
    min_size = 1 if flexible else 0
    all_fixed = not flexible
    tagged: dict[int, tuple[str, Step]] = {}
    deepest = 1
    for field in dataclasses.fields(cls):
        tag = field.metadata.get("tag")
        value, field_min, fixed, inner_depth = _value_plan(
            field, hints[field.name], flexible, tag is not None
        )
        deepest = max(deepest, inner_depth + 1)
        if deepest > MAX_SCHEMA_DEPTH:
            raise TypeError(f"{cls.__name__} nests deeper than {MAX_SCHEMA_DEPTH}")
        if tag is not None:
            name = f"{cls.__name__}_{field.name}"
            tagged[int(tag)] = (field.name, _value_function(value, name))
        else:
            body.append((field.name, value))
            min_size += field_min
            all_fixed = all_fixed and fixed is not None
    fields = _merge_fixed(body)
    fixed_size = min_size if all_fixed else None
    plan = EntityPlan(
        cls.__name__, tagged, flexible, min_size, fixed_size, deepest, tuple(fields), _loops(fields)
    )
    src = _Source()
    src.add(0, "def walk(buf, pos, end):")
    _emit_entity_body(src, plan, 4, 0)
    src.add(4, "return pos")
    walk = src.function(cls.__name__)
    return dataclasses.replace(plan, walk=walk, source="\n".join(src.lines))


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
    walk = _WALKS.get(cls) or entity_plan(cls).walk
    return walk(buf, offset, len(buf))
