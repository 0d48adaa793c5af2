"""The engine: each deployed pipeline as one sidekick pool per step, brought up in the
background (the previous version serves until the new one is ready), and its status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.engine import stages as stage_kinds
from wallaroo_pulumi.runtime.engine.model_files import ModelFiles
from wallaroo_pulumi.runtime.engine.step import Step
from wallaroo_pulumi.runtime.sidekick import Placement, SidekickSpec
from wallaroo_pulumi.runtime.sidekick.autoscale import policy_for
from wallaroo_pulumi.runtime.sidekick.steps import LocalSteps, StepPlacement, StepTarget
from wallaroo_pulumi.runtime.wire.steps import parse_steps

log = logging.getLogger("wallaroo_pulumi.runtime.engine")

STATUS_NAMES = {"starting": "Starting", "running": "Running", "failed": "Error", "undeployed": "Undeployed"}
DRAIN_TIMEOUT_S = 300.0  # how long a replaced version waits for the calls it took (an LLM call can take minutes)


@dataclass
class Live:
    pipeline_version: str
    pipeline_version_id: int
    steps: list[Step]  # every model, each its own sidekick pool
    stages: list[stage_kinds.AnyStage] = field(default_factory=list)  # what a call runs, in order

    in_flight: int = 0  # calls that took this version and have not answered yet
    _idle: asyncio.Event | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def hold(self):  # noqa: ANN201 - a context manager
        """A call on this version: its sidekicks stay up until it answers (see `drained`)."""
        self.in_flight += 1
        try:
            yield self
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no call holds this version (False when `timeout_s` passed first)."""
        if self.in_flight == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


@dataclass
class DeploymentState:
    id: int
    pipeline_id: int
    pipeline_name: str
    config: DeploymentConfig
    pipeline_version: str
    state: str = "starting"
    reason: str | None = None
    live: Live | None = None
    starting: list[Step] = field(default_factory=list)
    failed_sidekicks: list[dict[str, Any]] = field(default_factory=list)
    failed_models: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def deploy_name(self) -> str:
        return f"{self.pipeline_name}-{self.id}"


class DeployError(WallarooError):
    """A deployment that could not come up; its message is the deployment's reason."""


# Sidekick states, as Wallaroo names a sidekick's status.
SIDEKICK_STATUS = {"starting": "Starting", "ready": "Running", "failed": "Error", "stopped": "Stopped"}


class Engine:
    def __init__(self, model_files: ModelFiles, placement: Placement, metrics: Metrics, host: str,
                 steps: StepPlacement | None = None) -> None:
        self.model_files = model_files
        self.placement = placement
        self.steps = steps or LocalSteps(placement)  # where each step's pool runs: here, or in pods (D35)
        self.metrics = metrics
        self.host = host
        self.deployments: dict[str, DeploymentState] = {}
        self.retiring: set[asyncio.Task] = set()  # replaced versions waiting for their calls (see `_retire`)
        metrics.registry.register(_Gauges(self.deployments))

    # -- lifecycle ---------------------------------------------------------
    def get(self, pipeline_name: str) -> DeploymentState | None:
        return self.deployments.get(pipeline_name)

    async def record_failure(self, deployment_id: int, pipeline_id: int, pipeline_name: str,
                             pipeline_version: str, reason: str) -> None:
        """A deployment that cannot even be started here: its status and inference say why."""
        await self.undeploy(pipeline_name)
        self.deployments[pipeline_name] = DeploymentState(
            id=deployment_id, pipeline_id=pipeline_id, pipeline_name=pipeline_name, config=DeploymentConfig(),
            pipeline_version=pipeline_version, state="failed", reason=reason)

    async def deploy(
        self,
        deployment_id: int,
        pipeline_id: int,
        pipeline_name: str,
        version: dict[str, Any],
        steps: list[dict[str, Any]],
        config: DeploymentConfig,
    ) -> DeploymentState:
        """Start bringing up `steps` (rows with model version info); returns at once."""
        old = self.deployments.get(pipeline_name)
        if old is not None and old.task is not None and not old.task.done():
            old.task.cancel()
            try:
                await old.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        state = DeploymentState(
            id=deployment_id, pipeline_id=pipeline_id, pipeline_name=pipeline_name, config=config,
            pipeline_version=version["version"],
        )
        if old is not None:
            state.live = old.live  # keeps serving until the new pools are ready
        self.deployments[pipeline_name] = state
        state.task = asyncio.create_task(self._bring_up(state, version, steps), name=f"deploy-{pipeline_name}")
        return state

    async def _bring_up(self, state: DeploymentState, version: dict[str, Any], steps: list[dict[str, Any]]) -> None:
        config = state.config
        new_steps: list[Step] = []
        spare = self._spare_pools(state.live)
        kept: set[int] = set()  # ids of the pools taken over from the live version, running already
        self.metrics.deploys.labels(state.pipeline_name).inc()
        try:
            seen: dict[str, int] = {}
            for row in steps:
                model_dir = await self.model_files.model_dir(row["sha"])
                requirements = row.get("requirements") or []
                extra_path = await self.model_files.requirements(model_dir, requirements) if self.steps.local else []
                side = config.sidekick(row["name"], row["id"])
                seen[row["name"]] = seen.get(row["name"], 0) + 1
                step_name = row["name"] if seen[row["name"]] == 1 else f"{row['name']}#{seen[row['name']]}"
                spec = SidekickSpec(
                    step_name=step_name,
                    model_version=row["version"],
                    model_dir=model_dir,
                    env=dict(side.env),
                    cpus=side.cpus,
                    memory=side.memory,
                    gpus=side.gpus,
                    scratch_size=side.scratch_size,
                    max_processes=side.max_processes,
                    extra_pythonpath=extra_path,
                    load_timeout_s=config.python_load_timeout_secs,
                    max_batch_rows=side.max_batch_rows,
                    batching=row.get("dynamic_batching"),
                )
                target = StepTarget(
                    deployment_id=state.id, pipeline_name=state.pipeline_name, pipeline_version=version["version"],
                    pipeline_version_id=version["id"], model_name=row["name"], model_version=row["version"],
                    sha=row["sha"], requirements=list(requirements), arch=side.arch or config.arch,
                    accel=side.accel or config.accel, deployment_label=config.deployment_label,
                    autoscale_min=config.autoscale_min, autoscale_max=config.autoscale_max,
                    autoscale_target_pct=config.autoscale_cpu_utilization,
                )
                same_as = _same_as(spec, target, config) if self.steps.local else ""
                reused = spare.get(same_as, []).pop(0) if spare.get(same_as) else None
                pool = reused.pool if reused else self.steps.pool(target, spec, config.replicas, policy_for(config))
                if reused:
                    kept.add(id(pool))
                new_steps.append(
                    Step(
                        name=step_name, model_name=row["name"], model_version=row["version"],
                        model_version_id=row["id"], sha=row["sha"], input_schema=row["input_schema"],
                        output_schema=row["output_schema"], pool=pool, same_as=same_as,
                    )
                )
            state.starting = new_steps
            fresh = [s for s in new_steps if id(s.pool) not in kept]
            results = await asyncio.gather(*(s.pool.start() for s in fresh), return_exceptions=True)
            errors = [(s, r) for s, r in zip(fresh, results, strict=True) if isinstance(r, BaseException)]
            if errors:
                step, exc = errors[0]
                if isinstance(exc, asyncio.CancelledError):
                    raise exc
                failed = {s.name: str(r) for s, r in errors}
                state.failed_models = [
                    {"name": s.model_name, "version": s.model_version, "sha": s.sha,
                     "status": "Error" if s.name in failed else "Stopped", "reason": failed.get(s.name)}
                    for s in new_steps
                ]
                raise DeployError(f"step {step.name!r} failed to load: {exc}") from exc
        except asyncio.CancelledError:
            await self._stop_steps([s for s in new_steps if id(s.pool) not in kept])  # the kept ones still serve
            state.starting = []
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes the deployment's reason
            reason = str(exc) if isinstance(exc, WallarooError) else f"{type(exc).__name__}: {exc}"
            state.failed_sidekicks = self._sidekick_rows(new_steps, failed=True, reason=reason)
            await self._stop_steps([s for s in new_steps if id(s.pool) not in kept])
            state.starting = []
            old = state.live
            state.live = None
            await self._stop_live(old)
            state.state = "failed"
            state.reason = reason
            log.warning("deployment %s failed: %s", state.deploy_name, reason)
            return
        old = state.live
        plan = parse_steps(json.loads(version["definition"])["steps"])
        state.live = Live(version["version"], version["id"], new_steps, stage_kinds.build(plan, new_steps))
        state.starting = []
        state.state = "running"
        state.reason = None
        state.failed_models = []
        log.info("deployment %s running (%d step(s), %d replica(s) each)", state.deploy_name, len(new_steps), config.replicas)
        if old is not None:  # a task of its own: the next deploy cancels this one, never the drain
            task = asyncio.create_task(self._retire(old, state.deploy_name, kept), name=f"retire-{state.deploy_name}")
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)

    async def _stop_steps(self, steps: list[Step]) -> None:
        for step in steps:
            try:
                await asyncio.shield(step.pool.stop())
            except Exception:  # noqa: BLE001
                log.exception("stopping sidekicks of step %s", step.name)

    async def _stop_live(self, live: Live | None) -> None:
        if live is not None:
            await self._stop_steps(live.steps)

    @staticmethod
    def _spare_pools(live: Live | None) -> dict[str, list[Step]]:
        """The live version's steps by what their pools run: a new version whose step runs exactly
        the same (model, env, limits, replicas) takes that pool over, so a change of weights or of
        another step restarts nothing (local placement; pods are always made anew)."""
        spare: dict[str, list[Step]] = {}
        for step in live.steps if live else []:
            if step.same_as:
                spare.setdefault(step.same_as, []).append(step)
        return spare

    async def _retire(self, live: Live, deploy_name: str, kept: set[int]) -> None:
        """Stop a replaced version once the calls it took have answered: new calls already go to
        the new version, so a swap drops none (they were answered 502 when it stopped at once)."""
        try:
            if not await live.drained(DRAIN_TIMEOUT_S):
                log.warning("deployment %s: %d call(s) on the replaced version still running after %.0fs; "
                            "stopping it", deploy_name, live.in_flight, DRAIN_TIMEOUT_S)
        finally:
            await self._stop_steps([s for s in live.steps if id(s.pool) not in kept])

    async def undeploy(self, pipeline_name: str) -> bool:
        state = self.deployments.pop(pipeline_name, None)
        if state is None:
            return False
        if state.task is not None and not state.task.done():
            state.task.cancel()
            try:
                await state.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await self._stop_live(state.live)
        state.live = None
        state.state = "undeployed"
        return True

    async def shutdown(self) -> None:
        for name in list(self.deployments):
            await self.undeploy(name)
        for task in list(self.retiring):  # stop what is still draining, now
            task.cancel()
        await asyncio.gather(*self.retiring, return_exceptions=True)

    async def wait_settled(self, pipeline_name: str) -> None:
        state = self.deployments.get(pipeline_name)
        if state is not None and state.task is not None:
            try:
                await asyncio.shield(state.task)
            except Exception:  # noqa: BLE001
                pass

    # -- status ------------------------------------------------------------
    def _sidekick_rows(self, steps: list[Step], failed: bool = False, reason: str | None = None) -> list[dict[str, Any]]:
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

    def status(self, state: DeploymentState) -> dict[str, Any]:
        status = STATUS_NAMES[state.state]
        if state.state == "failed":
            sidekicks = state.failed_sidekicks
        else:
            steps = list(state.starting) or (state.live.steps if state.live else [])
            if state.starting and state.live:  # a pool taken over is listed once
                steps = list({id(s.pool): s for s in [*state.live.steps, *state.starting]}.values())
            sidekicks = self._sidekick_rows(steps)
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
                    "ip": self.host,
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
                {"ip": self.host, "name": f"engine-lb-{state.id}", "status": lb_status,
                 "reason": None if live else state.reason, "details": [] if live or not state.reason else [state.reason]}
            ],
            "sidekicks": sidekicks,
        }


_SEVERITY = {"Error": 3, "Starting": 2, "Stopped": 1, "Running": 0}


def _same_as(spec: SidekickSpec, target: StepTarget, config: DeploymentConfig) -> str:
    """Everything a step's pool runs with; equal for two versions' steps means one pool serves both."""
    return json.dumps([spec.model_dump(mode="json"), target.sha, target.requirements, target.arch, target.accel,
                       config.replicas, target.autoscale_min, target.autoscale_max, target.autoscale_target_pct],
                      sort_keys=True)


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


class _Gauges:
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
