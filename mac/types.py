"""``InferenceData``: one numpy array per Arrow column, keyed by field name, one entry per row."""

from __future__ import annotations

import enum
from typing import Any, TypeAlias

import numpy.typing as npt

InferenceData: TypeAlias = dict[str, npt.NDArray[Any]]
"""A batch as BYOP code sees it: column name -> numpy array (first axis = rows)."""


class SupportedFrameworks(enum.StrEnum):
    """Frameworks a ``mac`` config may name. BYOP models are always ``custom``."""

    CUSTOM = "custom"


__all__ = ["InferenceData", "SupportedFrameworks"]
