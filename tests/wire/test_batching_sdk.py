"""The Wallaroo SDK's dynamic batching, unchanged, against the runtime: a model version configured
with `DynamicBatchingConfig` (models/insert_model_config), read back as the SDK reads it, and the four
one-row requests of `pipeline.parallel_infer` answered as one batch of four rows (the batch's target)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.conftest import Server, make_model
from tests.wire.conftest import run_sdk

BATCH_ROWS = '''
return {"y": input_data["x"] * 10.0, "batch_rows": np.full(len(input_data["x"]), len(input_data["x"]), dtype=np.int64)}
'''


@pytest.mark.timeout(1800)
def test_the_sdks_dynamic_batching_config_drives_request_merging(sdk_python: str, wire_server: Server,
                                                                 tmp_path: Path) -> None:
    model = make_model(tmp_path, "sdk-batched", BATCH_ROWS)
    [out] = run_sdk(sdk_python, "batching_flow.py", wire_server.url, wire_server.token, str(tmp_path), str(model),
                    server=wire_server)
    assert out["config"] == {"max_batch_delay_ms": 3000, "batch_size_target": 4, "batch_size_limit": 8}
    assert out["y"] == [10.0, 20.0, 30.0, 40.0]
    assert out["batch_rows"] == [4, 4, 4, 4]
