"""The ``authorization`` section of a virtual cluster (placeholder; filled in by the ACL work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AuthorizationConfig(BaseModel):
    """ACL rules of one virtual cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)
