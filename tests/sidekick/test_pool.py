"""The workers of one step (`SidekickPool`): its autoscale bounds, and with real subprocesses
spreading requests, autoscaling, a failed start."""

from __future__ import annotations

import asyncio
import time

import pytest

from wallaroo_pulumi.runtime.sidekick import LocalPlacement, SidekickLoadError, SidekickPool, SidekickSpec
from wallaroo_pulumi.runtime.sidekick.autoscale import ScalePolicy

from .sidekick_helpers import ModelFactory, one_row, run, spec_for


def test_a_pool_starts_inside_its_autoscale_bounds(tmp_path) -> None:
    spec = SidekickSpec(step_name="s", model_version="v1", model_dir=tmp_path)
    bounds = ScalePolicy(minimum=2, maximum=3)
    assert SidekickPool(spec, 1, bounds, LocalPlacement()).replicas == 2  # replica_count under the floor
    assert SidekickPool(spec, 5, bounds, LocalPlacement()).replicas == 3  # and over the ceiling
    assert SidekickPool(spec, 1, None, LocalPlacement()).replicas == 1


def test_a_pool_scales_only_as_far_as_its_placement_has_room(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    spec = SidekickSpec(step_name="s", model_version="v1", model_dir=tmp_path, gpus=1)
    pool = SidekickPool(spec, 5, ScalePolicy(minimum=1, maximum=4), LocalPlacement())
    assert pool.policy == ScalePolicy(minimum=1, maximum=3) and pool.replicas == 3


def test_pool_spreads_requests(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        time.sleep(float(input_data["sleep"][0]))
        return {"pid": np.full(len(input_data["sleep"]), os.getpid())}
    """)

    async def scenario() -> None:
        pool = SidekickPool(spec_for(folder, "pooled"), 2, None, LocalPlacement())
        await pool.start()
        try:
            pids = {s.pid for s in pool.sidekicks}
            assert len(pids) == 2 and None not in pids
            assert all(s.state == "ready" for s in pool.sidekicks)
            # concurrent: least-busy dispatch puts the two requests on different replicas
            outs = await asyncio.gather(*(pool.predict(one_row(sleep=0.3)) for _ in range(2)))
            assert {o.column("pid")[0].as_py() for o in outs} == pids
            # sequential: round-robin still reaches both
            seq = [(await pool.predict(one_row(sleep=0.0))).column("pid")[0].as_py() for _ in range(4)]
            assert set(seq) == pids
            # four concurrent requests on two workers: serialized per worker, all answered
            t0 = time.monotonic()
            outs = await asyncio.gather(*(pool.predict(one_row(sleep=0.2)) for _ in range(4)))
            assert time.monotonic() - t0 < 0.8 + 0.5
            assert sorted(o.column("pid")[0].as_py() for o in outs) == sorted(list(pids) * 2)
        finally:
            await pool.stop()
        assert all(s.state == "stopped" for s in pool.sidekicks)

    run(scenario)


def test_pool_grows_under_load_and_shrinks_when_idle_without_failing_a_request(model_factory: ModelFactory) -> None:
    """Real workers: steady load saturates the one worker, so the pool grows (to at most its
    maximum); once the load stops it shrinks back to its minimum. The worker that leaves
    answers what it holds first: no request fails while the pool changes size."""
    folder = model_factory("""
        time.sleep(float(input_data["sleep"][0]))
        return {"pid": np.full(len(input_data["sleep"]), os.getpid())}
    """)
    policy = ScalePolicy(minimum=1, maximum=3, interval_s=0.2, up_after=2, down_after=5)

    async def scenario() -> None:
        pool = SidekickPool(spec_for(folder, "scaling"), 1, policy, LocalPlacement())
        await pool.start()
        served: set[int] = set()
        stop_load = asyncio.Event()

        async def client() -> None:
            while not stop_load.is_set():
                out = await pool.predict(one_row(sleep=0.05))
                served.add(out.column("pid")[0].as_py())

        clients = [asyncio.ensure_future(client()) for _ in range(6)]
        try:
            deadline = time.monotonic() + 30
            while pool.replicas < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert pool.replicas == 3, "the pool did not grow under steady load"
            while len(served) < 3 and time.monotonic() < deadline:  # the new workers take requests
                await asyncio.sleep(0.1)
            assert len(served) == 3
            await asyncio.sleep(1.0)
            assert pool.replicas == 3  # the ceiling holds under load

            stop_load.set()
            await asyncio.gather(*clients)  # raises if any request failed while scaling
            deadline = time.monotonic() + 30
            while pool.replicas > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert pool.replicas == 1, "the pool did not shrink when idle"
            assert (await pool.predict(one_row(sleep=0.0))).num_rows == 1
        finally:
            stop_load.set()
            await asyncio.gather(*clients, return_exceptions=True)
            await pool.stop()
        assert all(s.state == "stopped" for s in pool.sidekicks)

    run(scenario)


def test_pool_start_failure_stops_all(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", prelude="\nimport module_that_does_not_exist\n")

    async def scenario() -> None:
        pool = SidekickPool(spec_for(folder, "pool-broken"), 2, None, LocalPlacement())
        with pytest.raises(SidekickLoadError, match="ModuleNotFoundError"):
            await pool.start()
        assert all(s.pid is None for s in pool.sidekicks)

    run(scenario)
