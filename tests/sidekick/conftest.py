"""Fixtures of the sidekick tests (helpers live in ``sidekick_helpers``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .sidekick_helpers import write_model


@pytest.fixture
def model_factory(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10_000))

    def make(predict: str, **kwargs: Any) -> Path:
        return write_model(tmp_path / f"model{next(counter)}", predict, **kwargs)

    return make
