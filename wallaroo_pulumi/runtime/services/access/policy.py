"""The access rules, in one place: each route's permission and how to find what it touches, and
the decision for a key. Routes know nothing of keys; a route without a rule is admin-only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from starlette.routing import compile_path

from wallaroo_pulumi.runtime.services.access.errors import Forbidden
from wallaroo_pulumi.runtime.services.access.keys import ApiKey


class Perm(StrEnum):
    INFER = "infer"
    READ_LOGS = "read_logs"
    DEPLOY = "deploy"
    ADMIN = "admin"


NEEDS = {
    Perm.INFER: "inference needs an inference, deployer or admin key",
    Perm.READ_LOGS: "inference logs and listener scores need a deployer or admin key, or an inference key "
                    "created with read_logs",
    Perm.DEPLOY: "models, pipelines, deployments, orchestrations and tasks need a deployer or admin key",
    Perm.ADMIN: "keys, workspaces, usage and metrics need an admin key",
}


class Find(StrEnum):
    """Where a request names what it touches (resolved by `targets.Targets`)."""

    NOTHING = "nothing"  # no workspace's data: the permission alone decides
    WORKSPACE = "workspace"  # body `workspace_id` (default 1), and the model versions its steps name
    LISTED = "listed"  # body `workspace_id`; absent lists every workspace
    UPLOAD = "upload"  # multipart `metadata.workspace_id` (default 1)
    PIPELINE = "pipeline"  # body `pipeline_id`, else `name_field` in `workspace_id` (default 1)
    PIPELINE_NAMED = "pipeline_named"  # body `pipeline_id` is the pipeline's name (digits too), in `workspace_id`
    DEPLOYMENT = "deployment"  # body `name` ('<pipeline>-<id>') in `workspace_id` (default 1)
    MODEL = "model"  # body `model_id`, else `name` in `workspace_id` (default 1)
    MODEL_VERSION = "model_version"  # body `model_version_id`
    LOGS = "logs"  # body `name_field`: the pipeline (or listener score pipeline) whose logs it reads
    TOPIC = "topic"  # the log topic in the URL ('workspace-<id>-pipeline-<name>-inference')
    SCORES = "scores"  # body `name_field`: a monitored pipeline whose listeners' scores it reads
    INFER = "infer"  # the pipeline in the URL
    NEW_TASK = "new_task"  # body `workspace_id` (default 1) and the pipeline its `json` monitors
    TASK = "task"  # body `name_field` (default `id`) of a listener task (and the pipeline a new `json` monitors)
    RUN = "run"  # body `name_field` (default `id`) of a listener run
    IN_WORKSPACE = "in_workspace"  # body `workspace_id` (default 1)
    WORKSPACES = "workspaces"  # body `workspace_ids`; absent or empty lists every workspace
    ORCHESTRATION = "orchestration"  # body `name_field` (default `id`): uploaded orchestration id(s) (the built-in: none)


@dataclass(frozen=True)
class Rule:
    method: str
    path: str
    perm: Perm
    find: Find = Find.NOTHING
    name_field: str | None = None
    narrows: bool = False  # a listing of every workspace asked with a key of one: that one's (access/visible.py)
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_path(self.path)[0])


P, G = "POST", "GET"
RULES: tuple[Rule, ...] = (
    Rule(G, "/metrics", Perm.ADMIN),
    Rule(G, "/v1/api/openapi.json", Perm.DEPLOY),
    Rule(G, "/v1/api/docs", Perm.DEPLOY),
    Rule(G, "/docs/oauth2-redirect", Perm.DEPLOY),
    Rule(P, "/v1/api/workspaces/list", Perm.ADMIN),
    Rule(P, "/v1/api/workspaces/create", Perm.ADMIN),
    Rule(P, "/v1/api/keys/create", Perm.ADMIN),
    Rule(P, "/v1/api/keys/list", Perm.ADMIN),
    Rule(P, "/v1/api/keys/get", Perm.ADMIN),
    Rule(P, "/v1/api/keys/update", Perm.ADMIN),
    Rule(P, "/v1/api/keys/revoke", Perm.ADMIN),
    Rule(P, "/v1/api/usage/get", Perm.ADMIN),
    Rule(P, "/v1/api/models/upload_and_convert", Perm.DEPLOY, Find.UPLOAD),
    Rule(P, "/v1/api/models/list", Perm.DEPLOY, Find.LISTED),
    Rule(P, "/v1/api/models/list_versions", Perm.DEPLOY, Find.MODEL),
    Rule(P, "/v1/api/models/get_model_version_by_id", Perm.DEPLOY, Find.MODEL_VERSION),
    Rule(P, "/v1/api/models/get_version_by_id", Perm.DEPLOY, Find.MODEL_VERSION),
    Rule(P, "/v1/api/models/delete_model", Perm.DEPLOY, Find.MODEL),
    Rule(P, "/v1/api/models/insert_model_config", Perm.DEPLOY, Find.MODEL_VERSION),
    Rule(P, "/v1/api/pipelines/create", Perm.DEPLOY, Find.WORKSPACE),
    Rule(P, "/v1/api/pipelines/deploy", Perm.DEPLOY, Find.PIPELINE, "deploy_id"),
    Rule(P, "/v1/api/pipelines/undeploy", Perm.DEPLOY, Find.PIPELINE),
    Rule(P, "/v1/api/pipelines/get_pipeline_by_name", Perm.DEPLOY, Find.PIPELINE, "pipeline_name"),
    Rule(P, "/v1/api/pipelines/list_pipelines", Perm.DEPLOY, Find.LISTED),
    Rule(P, "/v1/api/pipelines/list_pipeline_versions", Perm.DEPLOY, Find.PIPELINE_NAMED),
    Rule(P, "/v1/api/pipelines/delete_pipeline", Perm.DEPLOY, Find.PIPELINE_NAMED),
    Rule(P, "/v1/api/pipelines/set_guardrails", Perm.DEPLOY, Find.PIPELINE_NAMED),
    Rule(P, "/v1/api/pipelines/get_guardrails", Perm.DEPLOY, Find.PIPELINE_NAMED),
    Rule(P, "/v1/api/status/get_deployment", Perm.DEPLOY, Find.DEPLOYMENT),
    Rule(P, "/v1/graphql", Perm.DEPLOY),  # read-only; a workspace key sees its workspace's objects only
    Rule(P, "/v1/api/pipelines/get_logs", Perm.READ_LOGS, Find.LOGS, "pipeline_name"),
    Rule(P, "/v1/api/plateau/get_topic_name", Perm.DEPLOY),  # a topic names its pipeline, nothing more
    Rule(P, "/v1/logs/topic/{topic}/records", Perm.READ_LOGS, Find.TOPIC),
    Rule(P, "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}", Perm.INFER, Find.INFER),
    Rule(P, "/v1/api/pipelines/infer/{deploy_name}", Perm.INFER, Find.INFER),
    Rule(P, "/infer/{pipeline_name}", Perm.INFER, Find.INFER),
    Rule(P, "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}/openai/v1/chat/completions", Perm.INFER, Find.INFER),
    Rule(P, "/v1/api/pipelines/infer/{deploy_name}/{pipeline_name}/openai/v1/completions", Perm.INFER, Find.INFER),
    Rule(P, "/infer/{pipeline_name}/openai/v1/chat/completions", Perm.INFER, Find.INFER),
    Rule(P, "/infer/{pipeline_name}/openai/v1/completions", Perm.INFER, Find.INFER),
    Rule(P, "/v1/api/task/run_once", Perm.DEPLOY, Find.NEW_TASK),
    Rule(P, "/v1/api/task/run_scheduled", Perm.DEPLOY, Find.NEW_TASK),
    Rule(P, "/v1/api/task/run_continuously", Perm.DEPLOY, Find.NEW_TASK),
    Rule(P, "/v1/api/task/get_by_id", Perm.DEPLOY, Find.TASK),
    Rule(P, "/v1/api/task/list", Perm.DEPLOY, Find.LISTED, narrows=True),
    Rule(P, "/v1/api/task/list_task_runs", Perm.DEPLOY, Find.TASK, "task_id"),
    Rule(P, "/v1/api/task/get_run_details", Perm.DEPLOY, Find.RUN, "pod_id"),
    Rule(P, "/v1/api/task/get_logs_for_run", Perm.DEPLOY, Find.RUN),
    Rule(P, "/v1/api/task/kill", Perm.DEPLOY, Find.TASK),
    Rule(P, "/v1/api/task/update", Perm.DEPLOY, Find.TASK),
    Rule(P, "/v1/api/task/delete", Perm.DEPLOY, Find.TASK),
    # a built-in listener run's calls back: the service answers only that run's own key (run_api.scope)
    *(Rule(P, f"/v1/api/task/listener_run/{call}", Perm.DEPLOY) for call in (
        "page", "sealed", "settle_segments", "claim", "settle", "scores", "report")),
    Rule(P, "/v1/api/listeners/results", Perm.READ_LOGS, Find.SCORES, "pipeline"),
    Rule(P, "/v1/api/assays/run", Perm.READ_LOGS, Find.SCORES, "pipeline"),
    Rule(P, "/v1/api/listeners/builtins", Perm.DEPLOY),
    Rule(P, "/v1/api/orchestration/upload", Perm.DEPLOY, Find.UPLOAD),
    Rule(P, "/v1/api/orchestration/list", Perm.DEPLOY, Find.IN_WORKSPACE),
    Rule(P, "/v1/api/orchestration/list_all", Perm.DEPLOY, Find.WORKSPACES, narrows=True),
    Rule(P, "/v1/api/orchestration/get_by_id", Perm.DEPLOY, Find.ORCHESTRATION),
    Rule(P, "/v1/api/orchestration/requirements", Perm.DEPLOY, Find.ORCHESTRATION),
    Rule(P, "/v1/api/orchestration/delete_orchestrations", Perm.DEPLOY, Find.ORCHESTRATION, "orchestrations"),
)
_EXACT = {(r.method, r.path): r for r in RULES if "{" not in r.path}
_TEMPLATED = [r for r in RULES if "{" in r.path]


def rule_for(method: str, path: str) -> tuple[Rule, dict[str, str]] | None:
    """The rule of a request and its path parameters; None for a route without one (admin only)."""
    method = "GET" if method == "HEAD" else method
    rule = _EXACT.get((method, path))
    if rule is not None:
        return rule, {}
    for rule in _TEMPLATED:
        if rule.method == method and (match := rule.regex.match(path)):
            return rule, match.groupdict()
    return None


UNOWNED = 0  # stands for logs no workspace owns (a deleted pipeline's): admin keys only


@dataclass(frozen=True)
class Target:
    """What a request touches: the workspaces owning it (None: every workspace) and the pipeline
    it names; `missing` when it names nothing that exists (the route answers 404 itself)."""

    workspaces: frozenset[int] | None
    pipeline: str | None = None
    missing: bool = False


NOTHING = Target(frozenset())
MISSING = Target(frozenset(), missing=True)


def granted(key: ApiKey) -> frozenset[Perm]:
    if key.role == "admin":
        return frozenset(Perm)
    if key.role == "deployer":
        return frozenset({Perm.INFER, Perm.READ_LOGS, Perm.DEPLOY})
    return frozenset({Perm.INFER, Perm.READ_LOGS} if key.read_logs else {Perm.INFER})


def permits(key: ApiKey, rule: Rule | None) -> None:
    """Forbidden unless the key's role carries the rule's permission (no rule: admin only)."""
    perm = rule.perm if rule is not None else Perm.ADMIN
    if perm not in granted(key):
        may = ", ".join(sorted(granted(key)))
        raise Forbidden(f"{key.label} lacks the '{perm}' permission ({NEEDS[perm]}); it has {may} on "
                        f"{key.scope_text()}")


def within(key: ApiKey, rule: Rule, target: Target) -> None:
    """Forbidden unless what the request touches lies within the key's scope."""
    if key.role == "admin" or rule.find is Find.NOTHING:
        return
    if key.pipelines is not None and rule.perm in (Perm.INFER, Perm.READ_LOGS) and target.pipeline not in key.pipelines:
        raise Forbidden(f"{key.label} lacks '{rule.perm}' on pipeline {target.pipeline!r}: it is scoped to "
                        f"{key.scope_text()}")
    if target.missing:
        return
    home = key.workspace_id
    if target.workspaces is None:
        raise Forbidden(f"{key.label} lacks '{rule.perm}' across all workspaces: it is scoped to "
                        f"{key.scope_text()}; pass workspace_id {home}")
    others = sorted(target.workspaces - {home})
    if others or not target.workspaces:
        named = [str(w) for w in others if w != UNOWNED]
        where = f"workspace {', '.join(named)}" if named else "logs no workspace owns (a deleted pipeline's)"
        raise Forbidden(f"{key.label} lacks '{rule.perm}' on {where}: it is scoped to {key.scope_text()}")
