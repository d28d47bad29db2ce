"""What every pydantic configuration model shares: the section base, strict integers,
checked file paths and several problems raised as one error.

Imported by :mod:`policies.config` and by the models it is built from
(:mod:`policies.acl.config`, :mod:`policies.quotas.config`, the TLS models in
:mod:`policies.auth.tls`), which is why it imports none of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = ["FilePath", "Integer", "Loc", "Section", "raise_problems", "reject_bool"]

#: Where in the configuration a problem is: keys and list indexes, outermost first.
Loc = tuple[str | int, ...]


class Section(BaseModel):
    """Base of every configuration section: immutable, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def raise_problems(title: str, problems: Iterable[tuple[Loc, str, str, Any]]) -> None:
    """Raise one ``ValidationError`` carrying several ``(loc, type, message, input)`` problems.

    Raised inside a validator, pydantic prefixes each ``loc`` with the location
    of the model being validated, so every problem points at its own key.
    Nothing is raised when ``problems`` is empty.
    """
    details = [
        InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
        for loc, kind, message, value in problems
    ]
    if details:
        raise ValidationError.from_exception_data(title, details)


def reject_bool(value: Any) -> Any:
    """Refuse a boolean where an integer belongs.

    pydantic's lax mode reads YAML ``true`` as 1; a boolean where a number belongs is a
    mistake. (Numeric strings stay accepted: ``${PORT}`` substitutes text.)
    """
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", f"expected an integer, got {str(value).lower()}")
    return value


#: An integer that is not a boolean.
Integer = Annotated[int, BeforeValidator(reject_bool)]


def _base_dir(info: ValidationInfo) -> Path:
    """Directory relative paths resolve against: the config file's (loader context) or the cwd."""
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def _resolve_file(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise PydanticCustomError("file_path", "expected a file path, got an empty string")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = _base_dir(info) / path
    path = Path(os.path.normpath(path))
    if not path.is_file():
        where = (
            ""
            if Path(value).is_absolute()
            else " (relative paths resolve against the directory of the configuration file)"
        )
        problem = "is not a file" if path.exists() else "not found"
        raise PydanticCustomError("file_not_found", f"file {problem}: {path}{where}")
    if not os.access(path, os.R_OK):
        raise PydanticCustomError("file_not_readable", f"file is not readable: {path}")
    return str(path)


#: A path to an existing, readable file; validated to its absolute form. Relative
#: paths resolve against the configuration file's directory.
FilePath = Annotated[str, AfterValidator(_resolve_file)]
