"""Render the configuration reference (Markdown) from the pydantic model.

Walking :class:`~policies.config.GatewayConfig` rather than keeping a hand-written
table means the docs cannot drift from the code: ``tools/gen_config_docs.py``
writes this into docs/configuration.md and ``--check`` fails the build when it is stale.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from policies.config import GatewayConfig, HostPort

__all__ = ["ConfigKey", "iter_config_keys", "render_config_reference"]


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One documented key: ``path`` like ``virtual_clusters[].listener.bootstrap``."""

    path: str
    type: str
    default: str
    description: str


def render_config_reference(root: type[BaseModel] = GatewayConfig) -> str:
    """Markdown table of every key of the configuration file, in file order."""
    lines = [
        "Every key of the configuration file (generated from `policies/config.py` by",
        "`tools/gen_config_docs.py`; do not edit by hand). `[]` marks a list item;",
        "unknown keys are errors.",
        "",
        "| Key | Type | Default | Description |",
        "| --- | --- | --- | --- |",
    ]
    for key in iter_config_keys(root):
        cells = [f"`{key.path}`", key.type, key.default, key.description]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def iter_config_keys(model: type[BaseModel], prefix: str = "") -> Iterator[ConfigKey]:
    """Every key under ``model``, depth first, nested sections after their own row."""
    for name, field in model.model_fields.items():
        path = prefix + name
        annotation, _ = _strip_optional(field.annotation)
        yield ConfigKey(path, _field_type(field), _default(field), _description(field))
        nested = _model(annotation)
        if nested is not None:
            yield from iter_config_keys(nested, path + ".")
        elif typing.get_origin(annotation) is list:
            item = _model(_unwrap(typing.get_args(annotation)[0])[0])
            if item is not None:
                yield from iter_config_keys(item, path + "[].")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _description(field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"configuration field without a description: {field!r}")
    return field.description


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if value == {}:
        return "`{}`"
    if value == []:
        return "`[]`"
    return f"`{value}`"


def _field_type(field: FieldInfo) -> str:
    annotation, optional = _strip_optional(field.annotation)
    text = _type_name(annotation, list(field.metadata))
    return f"{text}, optional" if optional and field.is_required() else text


def _type_name(annotation: Any, metadata: list[Any]) -> str:
    annotation, extra = _unwrap(annotation)
    metadata = [*metadata, *extra]
    if annotation is HostPort:
        return "`host:port`"
    if _model(annotation) is not None:
        return "mapping"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin is list:
        item = _type_name(args[0], [])
        text = "list of mappings" if item == "mapping" else f"list of {item}"
        return text + _length(metadata)
    if origin is dict:
        return f"mapping of {_type_name(args[0], [])} → {_type_name(args[1], [])}"
    names = {
        str: "string",
        int: "integer",
        bool: "boolean",
        float: "number",
        SecretStr: "string (secret: never logged)",
    }
    name = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return name + _range(metadata)


def _range(metadata: list[Any]) -> str:
    low: Any = None
    high: Any = None
    low_op = high_op = ""
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low, low_op = item.ge, ">="
        elif isinstance(item, annotated_types.Gt):
            low, low_op = item.gt, ">"
        elif isinstance(item, annotated_types.Le):
            high, high_op = item.le, "<="
        elif isinstance(item, annotated_types.Lt):
            high, high_op = item.lt, "<"
    if low_op == ">=" and high_op == "<=":
        return f" ({low}..{high})"
    bounds = [f"{op} {v}" for op, v in ((low_op, low), (high_op, high)) if op]
    return f" ({', '.join(bounds)})" if bounds else ""


def _length(metadata: list[Any]) -> str:
    for item in metadata:
        if isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            return f" (at least {item.min_length})"
    return ""


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, *meta]`` -> ``(X, meta)``, flattening FieldInfo metadata."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        flat: list[Any] = []
        for item in meta:
            flat.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        return base, flat
    return annotation, []


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in {typing.Union, types.UnionType}:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
