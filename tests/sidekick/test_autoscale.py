"""The autoscaling policy alone: when a step's pool grows and shrinks (no processes started here;
test_pool.py scales real workers)."""

from __future__ import annotations

import time

import pytest

from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.runtime.kube.settings import KubeScale
from wallaroo_pulumi.runtime.sidekick.autoscale import Autoscaler, BusyClock, ScalePolicy, policy_for


def decisions(scaler: Autoscaler, replicas: int, samples: list[float]) -> list[int]:
    out = []
    for utilization in samples:
        change = scaler.decide(replicas, utilization)
        replicas += change
        out.append(change)
    return out


def test_grows_only_after_sustained_load_and_never_past_the_maximum() -> None:
    policy = ScalePolicy(minimum=1, maximum=3, target=0.75, up_after=3, down_after=30)
    assert decisions(Autoscaler(policy), 1, [0.9, 0.9, 0.2, 0.9, 0.9]) == [0, 0, 0, 0, 0]  # bursts are not load
    # each change restarts the count: the next step up needs three more samples at the new size
    assert decisions(Autoscaler(policy), 1, [0.9, 0.9, 0.9, 0.8, 0.8, 0.8]) == [0, 0, 1, 0, 0, 1]
    assert decisions(Autoscaler(policy), 3, [1.0] * 6) == [0] * 6  # 3 is the ceiling


def test_shrinks_after_a_long_quiet_spell_and_never_below_the_minimum() -> None:
    scaler = Autoscaler(ScalePolicy(minimum=2, maximum=4, target=0.8, up_after=2, down_after=4))
    # between half the target and the target: neither grow nor shrink
    assert decisions(scaler, 4, [0.5] * 10) == [0] * 10
    assert decisions(scaler, 4, [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]) == [0, 0, 0, -1, 0, 0, 0, -1]
    assert decisions(scaler, 2, [0.0] * 8) == [0] * 8  # the floor


def test_policy_from_the_deployment_config() -> None:
    assert policy_for(DeploymentConfig(replica_count=3)) is None
    assert policy_for(DeploymentConfig(autoscale_min=2, autoscale_max=2)) is None  # nothing to move
    policy = policy_for(DeploymentConfig(autoscale_min=0, autoscale_max=4, autoscale_cpu_utilization=60))
    assert policy is not None
    assert (policy.minimum, policy.maximum, policy.target) == (1, 4, 0.6)  # never scaled to zero
    assert policy_for(DeploymentConfig(autoscale_max=2)).target == 0.75  # type: ignore[union-attr]


def test_queue_depth_decides_on_the_average_over_its_window() -> None:
    """scale_up_queue_depth 4 over a window of 3 samples: the average, not one burst, grows the
    pool; below scale_down_queue_depth it shrinks; each change starts a new window."""
    policy = ScalePolicy(minimum=1, maximum=3, queue_up=4, queue_down=1, interval_s=1.0, window_s=3.0)
    scaler = Autoscaler(policy)
    depths = [9.0, 0.0, 0.0, 5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 0.5, 0.5, 0.5]
    replicas, out = 1, []
    for depth in depths:
        change = scaler.decide(replicas, utilization=1.0, queue_depth=depth)  # busy time plays no part
        replicas += change
        out.append(change)
    assert out == [0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, -1]
    policy = policy_for(DeploymentConfig(autoscale_max=4, scale_up_queue_depth=6, autoscaling_window=30))
    assert policy is not None and (policy.queue_up, policy.queue_down, policy.window_s) == (6, 1, 30.0)


def test_steps_in_pods_take_the_queue_depth_policy_too() -> None:
    scale = KubeScale(minimum=0, maximum=3, target=0.75, queue_up=4, queue_down=2, window_s=60.0)
    assert scale.policy() == ScalePolicy(minimum=1, maximum=3, target=0.75, queue_up=4, queue_down=2, window_s=60.0)
    assert KubeScale(minimum=1, maximum=2, target=0.5).policy().queue_up is None  # busy time


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"minimum": 0, "maximum": 2}, "1 <= minimum <= maximum"),
    ({"minimum": 3, "maximum": 2}, "1 <= minimum <= maximum"),
    ({"minimum": 1, "maximum": 2, "target": 1.5}, "autoscale target"),
    ({"minimum": 1, "maximum": 2, "queue_up": 2, "queue_down": 3}, "scale_down \\(3\\) <= scale_up \\(2\\)"),
])
def test_bad_policies_say_what_is_expected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScalePolicy(**kwargs)



def test_busy_time_of_a_worker_with_several_slots_counts_its_share_in_use() -> None:
    """D61: one batch on one of four slots is a quarter busy; four batches (or more) fully busy."""
    clock = BusyClock()
    clock.slots = 4
    clock.start()
    time.sleep(0.2)
    quarter = clock.seconds
    for _ in range(4):  # five in flight: no more than all of the time
        clock.start()
    time.sleep(0.2)
    whole = clock.seconds - quarter
    for _ in range(5):
        clock.stop()
    assert not clock.busy
    assert 0.04 <= quarter <= 0.08, quarter
    assert 0.19 <= whole <= 0.3, whole
    assert abs(clock.seconds - quarter - whole) < 0.01
