"""The Wallaroo SDK's `add_validations` and `replace_with_validations`, unchanged, against the runtime:
the Check step round-trips and every answer's `anomaly.<name>` agrees with what polars 0.18.15 (the
SDK's pin, in its venv) computes for the same expressions over the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.conftest import DOUBLE, Server, make_model
from tests.wire.conftest import run_sdk

NAMES = ["too_high", "negative_in", "far_or_missing", "between", "listed", "scaled"]


@pytest.mark.timeout(900)
def test_add_and_replace_validations_round_trip(sdk_python: str, wire_server: Server, tmp_path: Path) -> None:
    model = make_model(tmp_path, "sdk-double", DOUBLE)
    [out] = run_sdk(sdk_python, "validations_flow.py", wire_server.url, wire_server.token, str(tmp_path), str(model),
                    server=wire_server)
    assert out["definition_step"] == ["Check"]
    assert sorted(out["columns"]) == sorted(f"anomaly.{n}" for n in ["count", *NAMES])  # the SDK's frame sorts them
    assert out["runtime"] == out["polars"]
    assert out["arrow"] == out["polars"]
    assert any(any(v) for v in out["polars"].values()) and not all(all(v) for v in out["polars"].values())
    assert out["count"] == [sum(bool(out["polars"][n][row]) for n in NAMES) for row in range(len(out["count"]))]
    assert out["logs"]["columns"] == [f"anomaly.{n}" for n in ["count", *NAMES]] and out["logs"]["count"] == 2 * sum(out["count"])
    replaced = out["replaced"]
    assert replaced["columns"] == ["anomaly.count", "anomaly.too_low"]
    assert replaced["runtime"] == replaced["polars"] and any(replaced["polars"]["too_low"])
