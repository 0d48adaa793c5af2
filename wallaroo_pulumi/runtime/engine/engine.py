"""The engine: each deployed pipeline as one sidekick pool per step, brought up in the
background (the previous version serves until the new one is ready); what it reports: status.py."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from wallaroo_pulumi.deployment import DeploymentConfig
from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.engine import stages as stage_kinds
from wallaroo_pulumi.runtime.engine.model_files import ModelFiles
from wallaroo_pulumi.runtime.engine.state import DeployError, DeploymentState, Live
from wallaroo_pulumi.runtime.engine.status import EngineGauges, deployment_status, sidekick_rows
from wallaroo_pulumi.runtime.engine.step import Step
from wallaroo_pulumi.runtime.sidekick import Placement, SidekickSpec
from wallaroo_pulumi.runtime.sidekick.autoscale import policy_for
from wallaroo_pulumi.runtime.sidekick.steps import LocalSteps, StepPlacement, StepTarget
from wallaroo_pulumi.runtime.wire.steps import parse_steps

log = logging.getLogger("wallaroo_pulumi.runtime.engine")

DRAIN_TIMEOUT_S = 300.0  # how long a replaced version waits for the calls it took (an LLM call can take minutes)


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
        metrics.registry.register(EngineGauges(self.deployments))

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
                seen[row["name"]] = seen.get(row["name"], 0) + 1
                step_name = row["name"] if seen[row["name"]] == 1 else f"{row['name']}#{seen[row['name']]}"
                new_steps.append(await self._make_step(state, version, row, step_name, spare, kept))
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
            state.failed_sidekicks = sidekick_rows(new_steps, failed=True, reason=reason)
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

    async def _make_step(self, state: DeploymentState, version: dict[str, Any], row: dict[str, Any], step_name: str,
                         spare: dict[str, list[Step]], kept: set[int]) -> Step:
        """The step that runs model version `row`: a pool of the live version that runs exactly the
        same, taken from `spare` (its id added to `kept`), else a new one (not started yet)."""
        config = state.config
        model_dir = await self.model_files.model_dir(row["sha"])
        requirements = row.get("requirements") or []
        extra_path = await self.model_files.requirements(model_dir, requirements) if self.steps.local else []
        side = config.sidekick(row["name"], row["id"])
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
            concurrency=side.model_concurrency,
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
        return Step(
            name=step_name, model_name=row["name"], model_version=row["version"],
            model_version_id=row["id"], sha=row["sha"], input_schema=row["input_schema"],
            output_schema=row["output_schema"], pool=pool, same_as=same_as,
        )

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

    def status(self, state: DeploymentState) -> dict[str, Any]:
        return deployment_status(state, self.host)


def _same_as(spec: SidekickSpec, target: StepTarget, config: DeploymentConfig) -> str:
    """Everything a step's pool runs with; equal for two versions' steps means one pool serves both."""
    return json.dumps([spec.model_dump(mode="json"), target.sha, target.requirements, target.arch, target.accel,
                       config.replicas, target.autoscale_min, target.autoscale_max, target.autoscale_target_pct],
                      sort_keys=True)
