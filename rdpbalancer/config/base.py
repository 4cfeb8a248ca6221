"""The base of every configuration model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Base of every section: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
