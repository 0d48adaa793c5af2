"""`WallarooPipeline`: ordered steps (models, splits, shadows, fallbacks), deployed with engine and
per-model sidekick config (D5, D13, D47), and its guardrail policies (D45: changed in place, no redeploy)."""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, ReadResult, Resource, ResourceProvider, UpdateResult
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import engine_config
from ..client import NotFoundError
from ..deployment import DeploymentConfig
from ..guardrails import Guardrails
from . import _base
from .connection import Connection, resolve
from .progress import report
from .sidekick_keys import split_deployment
from .steps import STEP_KINDS, definition_steps, models_of, refs_in

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class StepRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    version: str
    sha: str
    model_version_id: int | None = None


def check_step(step: Any) -> Any:
    """A model ref, or a definition step whose models are model refs (ValueError saying which is not)."""
    refs = refs_in(step) if isinstance(step, dict) and len(step) == 1 and next(iter(step)) in STEP_KINDS else None
    try:
        if refs is None:
            return StepRef.model_validate(step)
        for ref in refs:
            StepRef.model_validate(ref)
        return step
    except ValidationError as exc:
        raise ValueError(f"expected a WallarooModel, a {{name, version, sha}} model or a rollout step "
                         f"(RandomSplit, KeySplit, Shadow, Fallback); {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


class PipelineInputs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    steps: list[Any] = Field(min_length=1, description="model refs, or definition steps (RandomSplit, Shadow, ...)")
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    deploy: bool = True
    deploy_timeout_s: float = Field(default=300, gt=0)
    workspace_id: int = Field(default=1, ge=1)
    with_inference_key: bool = False
    guardrails: Guardrails | None = None
    url: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must be 1-63 lowercase letters, digits or '-' (it becomes part of the inference URL)")
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[Any]) -> list[Any]:
        return [check_step(s) for s in v]

    @model_validator(mode="after")
    def _sidekicks_name_steps(self) -> PipelineInputs:
        names = {r["name"] for r in model_refs(self.steps)}
        for key in self.deployment.sidekicks:
            if key not in names and not any(re.fullmatch(re.escape(n) + r"-\d+", key) for n in names):
                raise ValueError(
                    f"deployment.sidekicks names model {key!r}, which is not a step of this pipeline; expected a "
                    f"step's model name or '<name>-<model version id>' (steps: {', '.join(sorted(names))})"
                )
        return self


COMPARED = ("name", "steps", "deployment", "sidekick_env", "deploy", "workspace_id", "with_inference_key", "url",
            "guardrails")
REPLACE_ON = ("name", "workspace_id")
OUTPUT_KEYS = ("pipeline_id", "pipeline_version_pk_id", "version", "deployment_id", "inference_url", "status",
               "inference_key", "inference_key_id")


def merged_config(props: dict[str, Any]) -> DeploymentConfig:
    """The full config the runtime applies: public settings plus the (secret) sidekick env."""
    data = dict(props.get("deployment") or {})
    sidekicks = {k: dict(v) for k, v in (data.get("sidekicks") or {}).items()}
    for model, env in (props.get("sidekick_env") or {}).items():
        sidekicks.setdefault(model, {})["env"] = env
    data["sidekicks"] = sidekicks
    return DeploymentConfig.model_validate(data)


def canonical_deployment(public: dict[str, Any]) -> Any:
    """The deployment settings with defaults filled in and no env, as the runtime reports them."""
    try:
        config = DeploymentConfig.model_validate(public).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - an invalid config is compared as written (check reports it)
        return public
    for sidekick in (config.get("sidekicks") or {}).values():
        sidekick.pop("env", None)
    return config


def canonical_guardrails(spec: Any) -> Any:
    """The policies with their defaults filled in; none is no policies."""
    try:
        parsed = Guardrails.model_validate(spec).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - an invalid spec is compared as written (check reports it)
        return spec
    return parsed if parsed["policies"] else None


def canonical_steps(steps: list[Any]) -> Any:
    """Steps compared by model name and version (ids and hashes follow from those); a rollout
    step by its kind and settings, its models likewise."""
    def canonical(value: Any) -> Any:
        if isinstance(value, dict) and "name" in value and ("version" in value or "sha" in value):
            return (value.get("name"), value.get("version"))
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        if isinstance(value, list):
            return [canonical(v) for v in value]
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return [canonical(s) for s in steps]


def model_refs(steps: list[Any]) -> list[dict[str, Any]]:
    """Every model ref among `steps` (plain refs, and those inside rollout steps)."""
    out = []
    for s in steps:
        s = s.model_dump() if isinstance(s, StepRef) else s
        out += refs_in(s) if isinstance(s, dict) else []
    return out


def wire_steps(steps: list[Any]) -> list[dict[str, Any]]:
    """The `steps` input as the client sends them: refs checked, rollout steps as written."""
    out = []
    for s in steps:
        checked = check_step(s)
        out.append(checked.model_dump() if isinstance(checked, StepRef) else checked)
    return out


class PipelineProvider(ResourceProvider):
    """Create/version/deploy/undeploy pipelines through the MLOps API."""

    serialize_as_secret_always = False  # it captures no secret: keep it readable and cheap to diff

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        candidate = _base.reveal(news)
        if not _base.is_unknown(news.get("sidekick_env")) and not _base.is_unknown(news.get("deployment")):
            try:
                candidate["deployment"] = merged_config(candidate).model_dump()
            except Exception:  # noqa: BLE001 - reported field by field below
                pass
        checked = _base.check_inputs(PipelineInputs, candidate, PipelineInputs.model_fields)
        # The merged config holds the sidekick env: validate it, but hand the engine the inputs as
        # given, so the env stays only in the secret `sidekick_env` input.
        return CheckResult(news, checked.failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        return _base.diff(olds, news, COMPARED, REPLACE_ON, normalize=NORMALIZE)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._apply(props, previous=None)
        return CreateResult(str(outs["pipeline_id"]), outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        others = tuple(k for k in COMPARED if k != "guardrails")
        if not _base.diff(olds, news, others, normalize=NORMALIZE).changes:  # only the policies: no redeploy
            set_guardrails(_base.client(news), news)
            return UpdateResult({**olds, **news, **{k: olds.get(k) for k in OUTPUT_KEYS}})
        return UpdateResult(self._apply(news, previous=olds))

    def _apply(self, props: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        api = _base.client(props)
        name = props["name"]
        steps = wire_steps(props["steps"])
        created = api.create_pipeline(name, steps=steps,
                                      workspace_id=int(props.get("workspace_id") or 1))
        set_guardrails(api, props)  # before the deploy: its first call is already guarded
        outs = {**props, "pipeline_id": created.pipeline_id,
                "pipeline_version_pk_id": created.pipeline_version_pk_id,
                "version": created.version, "deployment_id": None, "inference_url": None,
                "status": "undeployed"}
        if props.get("deploy", True):
            report(f"WallarooPipeline {name}: deploying version {created.version[:8]} "
                   f"({len(steps)} step{'s' if len(steps) > 1 else ''})")
            deployment_id = api.deploy(
                name, pipeline_id=created.pipeline_id,
                pipeline_version_pk_id=created.pipeline_version_pk_id,
                engine_config=merged_config(props).model_dump(mode="json"),
                models=model_refs(steps),
            )
            status = api.wait_for_deployment(
                f"{name}-{deployment_id}", timeout_s=float(props.get("deploy_timeout_s") or 300),
                progress=lambda msg: report(f"WallarooPipeline {name}: {msg}", ephemeral=True),
            )
            outs.update(deployment_id=deployment_id, status=status,
                        inference_url=inference_url(props["url"], name, deployment_id))
            report(f"WallarooPipeline {name}: {status} at {outs['inference_url']}")
        elif previous and previous.get("deployment_id"):
            api.undeploy(created.pipeline_id, previous["deployment_id"])
        outs.update(inference_key_outputs(api, props, previous))
        return outs

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            current = _base.client(props).get_pipeline(int(id_))
        except NotFoundError:
            return ReadResult(None, {})
        outs = dict(props)
        outs.update(
            name=current.name, pipeline_id=current.pipeline_id,
            pipeline_version_pk_id=current.pipeline_version_pk_id, version=current.version,
            deployment_id=current.deployment_id, status=current.status,
            deploy=current.deployed,
            inference_url=inference_url(props["url"], current.name, current.deployment_id)
            if current.deployed else None,
        )
        if current.steps:
            outs["steps"] = wire_steps(current.steps)
        if current.engine_config is not None:
            outs["deployment"] = public_deployment(current.engine_config)
        guardrails = _base.client(props).get_guardrails(current.name, current.workspace_id)
        outs["guardrails"] = guardrails.model_dump(mode="json") if guardrails is not None else None
        outs.setdefault("workspace_id", current.workspace_id)
        outs.setdefault("deploy_timeout_s", 300)
        outs["token"] = _base.secret(props.get("token"))
        outs["sidekick_env"] = _base.secret(props.get("sidekick_env") or {})
        outs["inference_key"] = _base.secret(props.get("inference_key"))
        outs.setdefault("with_inference_key", False)
        return _base.read_result(id_, outs, (*PipelineInputs.model_fields, "sidekick_env"))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        api = _base.client(props)
        try:
            api.delete_pipeline(int(id_))
        except NotFoundError:
            pass
        revoke_key(api, props.get("inference_key_id"))


NORMALIZE = {"deployment": canonical_deployment, "steps": canonical_steps, "guardrails": canonical_guardrails}


def set_guardrails(api: Any, props: dict[str, Any]) -> None:
    """The pipeline's policies as the inputs say (none when unset)."""
    spec = canonical_guardrails(props.get("guardrails"))
    name = props["name"]
    api.set_guardrails(name, spec, workspace_id=int(props.get("workspace_id") or 1))
    if spec:
        report(f"WallarooPipeline {name}: guardrails " + ", ".join(f"{p['name']} ({p['kind']}: {p['action']})"
                                                                  for p in spec["policies"]))


def inference_key_outputs(api: Any, props: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The pipeline's inference-only key: kept across updates, created when asked for, revoked
    when no longer asked for."""
    old_id = (previous or {}).get("inference_key_id")
    if props.get("with_inference_key"):
        if old_id:
            return {"inference_key_id": old_id, "inference_key": _base.secret((previous or {}).get("inference_key"))}
        name = props["name"]
        created = api.create_key(f"{name}-inference", "inference", workspace_id=int(props.get("workspace_id") or 1),
                                 pipelines=[name])
        report(f"WallarooPipeline {name}: inference-only key {created.key.id}")
        return {"inference_key_id": created.key.id, "inference_key": _base.secret(created.secret.get_secret_value())}
    revoke_key(api, old_id)
    return {"inference_key_id": None, "inference_key": None}


def revoke_key(api: Any, key_id: Any) -> None:
    if key_id:
        try:
            api.revoke_key(int(key_id))
        except NotFoundError:
            pass  # already gone


def curl_command(url: pulumi.Input[str], example: str = "Summarise why the sky is blue.") -> pulumi.Output[str]:
    """The documented inference call for `url`, ready to paste (token from $WALLAROO_TOKEN)."""
    body = json.dumps([{"text": example}])
    return pulumi.Output.from_input(url).apply(
        lambda u: f"curl -s -X POST {u} -H \"Authorization: Bearer $WALLAROO_TOKEN\" "
                  f"-H 'Content-Type: application/json; format=pandas-records' --data '{body}'")


def public_deployment(engine_config: dict[str, Any]) -> dict[str, Any]:
    """The runtime's engine config as a program would write it: no env, no unset values."""
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None and k != "env"}

    out = strip(engine_config)
    out["sidekicks"] = {m: strip(c) for m, c in (engine_config.get("sidekicks") or {}).items()}
    return out


def inference_url(url: str, name: str, deployment_id: Any) -> str:
    """Wallaroo's documented inference endpoint for a deployment."""
    return f"{url.rstrip('/')}/v1/api/pipelines/infer/{name}-{deployment_id}/{name}"


class WallarooPipeline(Resource, module="wallaroo", name="Pipeline"):
    """Steps in order plus their deployment. A step is a `WallarooModel` (or {name, version, sha}),
    or a rollout step: `RandomSplit({stable: 90, canary: 10}, hash_key="user_id")`,
    `KeySplit("tier", control, {"gold": model})`, `Shadow(champion, [challengers])`,
    `Fallback([primary, secondary])`; each of their models runs in its own sidekick. With
    `inference_key=True` it also holds an inference-only key for its endpoint (revoked with the pipeline).
    `guardrails`: its policies (`wallaroo_pulumi.guardrails.Guardrails`, or the same as a dict);
    changing them updates in place.

    Outputs: `pipeline_id`, `version`, `deployment_id`, `inference_url`, `status`, and
    `inference_key` (secret) / `inference_key_id` when asked for.
    """

    pipeline_id: pulumi.Output[int]
    pipeline_version_pk_id: pulumi.Output[int]
    version: pulumi.Output[str]
    deployment_id: pulumi.Output[int]
    inference_url: pulumi.Output[str]
    status: pulumi.Output[str]
    inference_key: pulumi.Output[str]
    inference_key_id: pulumi.Output[int]

    def __init__(
        self,
        resource_name: str,
        *,
        steps: list[Any],
        deployment: Any = None,
        deploy: bool = True,
        name: str | None = None,
        deploy_timeout_s: float = 300,
        workspace_id: int = 1,
        inference_key: bool = False,
        guardrails: Guardrails | dict[str, Any] | None = None,
        connection: Connection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        self.pipeline_name = name or resource_name
        try:
            public, env = split_deployment(deployment, models_of(steps))
        except engine_config.EngineConfigError as exc:
            raise ValueError(f"WallarooPipeline {resource_name}: deployment.{exc}") from None
        except ValueError as exc:
            raise ValueError(f"WallarooPipeline {resource_name}: deployment: {exc}") from None
        url, token = resolve(connection)
        props = {
            "name": self.pipeline_name,
            "steps": definition_steps(steps),
            "deployment": public,
            "sidekick_env": pulumi.Output.secret(env),
            "deploy": deploy,
            "deploy_timeout_s": deploy_timeout_s,
            "workspace_id": workspace_id,
            "with_inference_key": inference_key,
            "guardrails": guardrails.model_dump(mode="json") if isinstance(guardrails, Guardrails) else guardrails,
            "url": url,
            "token": token,
            **{k: None for k in OUTPUT_KEYS},
        }
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["token", "sidekick_env", "inference_key"])
        )
        super().__init__(PipelineProvider(), resource_name, props, opts)
