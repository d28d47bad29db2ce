"""The ``quotas`` section of a virtual cluster (placeholder; filled in by the quota work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class QuotasConfig(BaseModel):
    """Rate quotas and connection limits of one virtual cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)
