"""Types BYOP code annotates with.

``InferenceData`` is what ``_predict`` receives and returns: one numpy array
per Arrow column, keyed by the schema's field names, every array holding one
entry per row of the batch.
"""

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
