"""A deployment's status as the engine reports it (Wallaroo's status body), and the engine's gauges."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import GaugeMetricFamily

from wallaroo_pulumi.runtime.engine.state import DeploymentState
from wallaroo_pulumi.runtime.engine.step import Step

STATUS_NAMES = {"starting": "Starting", "running": "Running", "failed": "Error", "undeployed": "Undeployed"}

# Sidekick states, as Wallaroo names a sidekick's status.
SIDEKICK_STATUS = {"starting": "Starting", "ready": "Running", "failed": "Error", "stopped": "Stopped"}

_SEVERITY = {"Error": 3, "Starting": 2, "Stopped": 1, "Running": 0}


def sidekick_rows(steps: list[Step], failed: bool = False, reason: str | None = None) -> list[dict[str, Any]]:
    """One row per sidekick of `steps`; `failed`: a deployment that failed (what is not running, an Error)."""
    rows = []
    for step in steps:
        for i, sk in enumerate(step.pool.sidekicks):
            last_error = sk.last_error
            status = SIDEKICK_STATUS[sk.state]
            if failed and status != "Running":
                status = "Error"
            rows.append(
                {
                    "name": getattr(sk, "pod", None) or f"engine-sidekick-{step.name}-{i}",  # a pod's own name
                    "step": step.name,
                    "model_version": step.model_version,
                    "status": status,
                    "pid": sk.pid,
                    "restarts": sk.restarts,
                    "reason": str(last_error) if last_error else (reason if failed and status == "Error" else None),
                    **({"limits": sk.limits} if getattr(sk, "limits", None) else {}),
                }
            )
    return rows


def deployment_status(state: DeploymentState, host: str) -> dict[str, Any]:
    """A deployment's status as Wallaroo reports it: the deployment, its engine and load balancer
    (served from `host`), every model step and sidekick."""
    status = STATUS_NAMES[state.state]
    if state.state == "failed":
        sidekicks = state.failed_sidekicks
    else:
        steps = list(state.starting) or (state.live.steps if state.live else [])
        if state.starting and state.live:  # a pool taken over is listed once
            steps = list({id(s.pool): s for s in [*state.live.steps, *state.starting]}.values())
        sidekicks = sidekick_rows(steps)
    live = state.live
    if live is not None:
        models = []
        for s in live.steps:
            step_status, step_reason = step_status_of(s.pool.sidekicks)
            models.append({"name": s.model_name, "version": s.model_version, "sha": s.sha,
                           "status": step_status, "reason": step_reason})
    else:
        models = [dict(m) for m in state.failed_models]
    # The engine serves the live version: Running only while every step of it has a worker ready.
    engine_status = _worst([m["status"] for m in models]) if live else status
    engine_details = [f"model {m['name']!r}: {m['status']}: {m['reason']}" for m in models if m.get("reason")]
    # The load balancer routes to the live version: it is Running while one serves, else it
    # says what the deployment says (Starting, Error) and why.
    lb_status = "Running" if live else status
    return {
        "name": state.deploy_name,
        "status": status,
        "reason": state.reason,
        "details": [state.reason] if state.reason else [],
        "pipeline_version": state.pipeline_version,
        "engines": [
            {
                "ip": host,
                "name": f"engine-{state.id}",
                "status": engine_status,
                "reason": state.reason or (engine_details[0] if engine_status != "Running" and engine_details
                                           else None),
                "details": engine_details,
                "pipeline_statuses": {
                    "pipelines": [{"id": state.pipeline_name, "status": engine_status,
                                   "version": live.pipeline_version if live else None}]
                },
                "model_statuses": {"models": models},
            }
        ],
        "engine_lbs": [
            {"ip": host, "name": f"engine-lb-{state.id}", "status": lb_status,
             "reason": None if live else state.reason, "details": [] if live or not state.reason else [state.reason]}
        ],
        "sidekicks": sidekicks,
    }


def _worst(statuses: list[str]) -> str:
    """The status of a whole made of parts: Running only when every part is."""
    return max(statuses, key=lambda st: _SEVERITY.get(st, 3), default="Running")


def step_status_of(sidekicks: list[Any]) -> tuple[str, str | None]:
    """A model step's status from its workers as they are now: Running while one is ready (or none
    is wanted: a step scaled to zero wakes on its next request), Error when none is ready and none
    is coming back (all failed or stopped: e.g. a worker that died and fails to restart), else
    Starting (a worker loading or restarting); with the last error of a worker that has one."""
    if not sidekicks:
        return "Running", None
    states = [sk.state for sk in sidekicks]
    errors = [str(sk.last_error) for sk in sidekicks if sk.last_error]
    if "ready" in states:
        return "Running", None
    if all(st in ("failed", "stopped") for st in states):
        return "Error", errors[0] if errors else "no worker is running"
    return "Starting", errors[0] if errors else None


class EngineGauges:
    """Prometheus collector of the engine's live state: deployments serving, workers and restarts per step."""

    def __init__(self, deployments: dict[str, DeploymentState]) -> None:
        self.deployments = deployments

    def describe(self) -> list:
        return []

    def collect(self):  # noqa: ANN201 - the prometheus_client collector protocol
        restarts = GaugeMetricFamily(
            "wallaroo_sidekick_restarts", "Restarts of each sidekick process", labels=["pipeline", "step", "replica"]
        )
        running = GaugeMetricFamily("wallaroo_deployment_running", "1 when the deployment serves", labels=["pipeline"])
        workers = GaugeMetricFamily(
            "wallaroo_sidekick_replicas", "Sidekick workers of each step now (autoscaled steps move)",
            labels=["pipeline", "step"],
        )
        for name, state in list(self.deployments.items()):
            running.add_metric([name], 1.0 if state.live else 0.0)
            for step in state.live.steps if state.live else []:
                workers.add_metric([name, step.name], float(step.pool.replicas))
                for i, sk in enumerate(step.pool.sidekicks):
                    restarts.add_metric([name, step.name, str(i)], float(sk.restarts))
        yield restarts
        yield running
        yield workers
