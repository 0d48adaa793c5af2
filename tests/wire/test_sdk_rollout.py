"""The Wallaroo SDK's rollout calls, unchanged, against the runtime: random and key splits, shadow
deploys, their replace_with_* forms, replace_with_model_step(...).deploy() and logs() with the
split and shadow columns (tests/wire/sdk/rollout_flow.py drives them)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.runtime.conftest import Server, make_model
from tests.wire.conftest import run_sdk


@pytest.mark.timeout(1800)
def test_the_sdks_rollout_calls_run_unchanged(sdk_python: str, wire_server: Server, tmp_path: Path) -> None:
    zips = [str(make_model(tmp_path, name, f'return {{"y": input_data["x"] * {k}}}'))
            for name, k in (("a", 1.0), ("b", 10.0), ("c", 100.0))]
    zips += [str(make_model(tmp_path, f"v{i}", f'return {{"y": input_data["x"] * float(os.environ["FACTOR"])}}  # v{i}'))
             for i in (1, 2)]
    [out] = run_sdk(sdk_python, "rollout_flow.py", wire_server.url, wire_server.token, str(tmp_path), *zips,
                    server=wire_server)

    split = out["random_split"]
    assert split["steps"] == ["RandomSplit"]  # the SDK reads its own step back
    assert "out._model_split" in split["columns"] and "out.y" in split["columns"]
    factor = {"sdk-a": 1.0, "sdk-b": 10.0}
    assert split["y"] == [factor[m] for m in split["served"]]
    assert split["again"] == split["served"]  # hash_key "id": sticky
    # 300 users at 2:1 (p=1/3 for sdk-b): sd 0.027; 0.12 is ~4.4 sd
    assert abs(Counter(split["served"])["sdk-b"] / 300 - 1 / 3) < 0.12
    assert out["replace_with_random_split"] == ["sdk-a", "sdk-c"]

    assert out["key_split"] == {"served": ["sdk-b", "sdk-c", "sdk-a"], "y": [10.0, 100.0, 1.0]}
    assert out["replace_with_key_split"] == ["sdk-a", "sdk-c"]

    shadow = out["shadow"]
    assert shadow["steps"] == ["ModelInference", "AuditResults", "MultiOut"]
    assert shadow["y"] == [2.0, 3.0] and not [c for c in shadow["columns"] if c.startswith("out_")]
    assert {"out_sdk-b.y", "out_sdk-c.y"} <= set(shadow["log_columns"])
    assert shadow["logged"] == {"out.y": [2.0, 3.0], "out_sdk-b.y": [20.0, 30.0], "out_sdk-c.y": [200.0, 300.0]}
    assert out["replace_with_shadow_deploy"] == [20.0]
    assert out["replace_with_model_step"] == [100.0]

    two = out["two_versions"]  # DeploymentConfigBuilder.sidekick_env(v1, ...).sidekick_env(v2, ...): one env each
    factor = {two["v1"]: 2.0, two["v2"]: 3.0}
    assert set(two["served"]) == set(factor)  # 200 rows at 1:1: both versions serve
    assert two["y"] == [factor[v] for v in two["served"]]
