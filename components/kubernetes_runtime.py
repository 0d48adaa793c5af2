"""`KubernetesRuntime`: the runtime image on a cluster, declared with pulumi-kubernetes (D10).

A Service, the admin token in a Secret, a data volume, a ServiceAccount, and either one `--role all`
Deployment or serving replicas (`--role serve`) plus a one-pod `--role scheduler` Deployment; every
pod on one node, non-root, without privileges. With `sidekick_placement="pods"` (the default) the
serving pods place each model step as pods of its own (D35), under a Role granting exactly that in
the namespace; with "local" the runtime's pods hold no token and run the steps as processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from wallaroo_pulumi.components.kubernetes_inputs import (  # noqa: F401 - importable from here as before
    ACCESS_MODES,
    OBJECT_STORE_ENV,
    PLACEMENTS,
    KubernetesRuntimeArgs,
)
from wallaroo_pulumi.resources.connection import Connection

APP_PORT = 8080
RUNTIME_UID = 10001  # the Dockerfile's user and group
TMP_SIZE = "1Gi"  # the runtime pod's /tmp (its root file system is read-only)
#: What a runtime placing steps as pods does in its namespace, and nothing else (runtime/kube).
POD_PLACEMENT_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    # task runs as Jobs of their own (D54): their pods' logs are the runs' logs
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


def _secret_key(var: str) -> str:
    return var.lower().replace("_", "-")


def declare_namespace(name: str, args: KubernetesRuntimeArgs, force: dict[str, str],
                      parent: pulumi.Resource) -> pulumi.ResourceOptions:
    """The namespace, when the component creates it; the options its other objects are declared with."""
    child = pulumi.ResourceOptions(parent=parent)
    if args.create_namespace:
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": args.namespace, "annotations": force}, opts=child)
        child = pulumi.ResourceOptions(parent=parent, depends_on=[ns])
    return child


def declare_backing_services(name: str, args: KubernetesRuntimeArgs, meta: dict[str, Any],
                             child: pulumi.ResourceOptions) -> KubernetesRuntimeArgs:
    """A small PostgreSQL and MinIO in the namespace (components/kubernetes_backing.py) when asked for;
    the inputs with their URLs and the bucket's credentials."""
    if not args.backing_services:
        return args
    from wallaroo_pulumi.components.kubernetes_backing import declare_backing

    assert args.secrets_key is not None
    backing = declare_backing(name, args.namespace, meta, args.storage_size, args.storage_class, args.secrets_key, child)
    return args.model_copy(update={"database_url": backing.database_url, "object_store_url": backing.object_store_url,
                                   "object_store_env": backing.object_store_env})


def declare_access(name: str, args: KubernetesRuntimeArgs, meta: dict[str, Any],
                   child: pulumi.ResourceOptions) -> tuple[k8s.core.v1.Secret, k8s.core.v1.ServiceAccount]:
    """The Secret (admin token, secrets key, database URL, bucket credentials), the ServiceAccount, and
    with pod placement the Role and RoleBinding that let it place model steps as pods."""
    secret = k8s.core.v1.Secret(
        f"{name}-token",
        metadata=meta,
        string_data={"token": pulumi.Output.secret(args.admin_token),
                     # seals sidekick credentials in runtime.db: a volume snapshot alone opens nothing
                     **({"secrets-key": pulumi.Output.secret(args.secrets_key)} if args.secrets_key is not None else {}),
                     # scaled out: where the metadata, artifacts and logs live, and the bucket's credentials
                     **({"database-url": pulumi.Output.secret(args.database_url)} if args.database_url is not None else {}),
                     **{_secret_key(var): pulumi.Output.secret(value)
                        for var, value in (args.object_store_env or {}).items()},
                     # the registry login publishes push with (D49): read by the pods through secretKeyRef
                     **({"oci-username": pulumi.Output.secret(args.publish_username),
                         "oci-password": pulumi.Output.secret(args.publish_password)}
                        if args.publish_username is not None else {})},
        opts=child,
    )
    # no token unless a pod asks for one: only serving pods placing steps as pods do (D35); model
    # code left in the runtime's container (listeners) is sandboxed away from it (D31)
    account = k8s.core.v1.ServiceAccount(
        f"{name}-runtime",
        metadata=meta,
        automount_service_account_token=False,
        opts=child,
    )
    if args.pods:
        role = k8s.rbac.v1.Role(f"{name}-sidekicks", metadata=meta, rules=POD_PLACEMENT_RULES, opts=child)
        k8s.rbac.v1.RoleBinding(
            f"{name}-sidekicks",
            metadata=meta,
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata["name"]},
            subjects=[{"kind": "ServiceAccount", "name": account.metadata["name"], "namespace": args.namespace}],
            opts=child,
        )
    return secret, account


def declare_storage(name: str, args: KubernetesRuntimeArgs, meta: dict[str, Any],
                    child: pulumi.ResourceOptions) -> k8s.core.v1.PersistentVolumeClaim | None:
    """The data volume the pods share on one node; none scaled out, where a pod's data dir is its own
    (artifact copies, unshipped log rows)."""
    if args.scale_out:
        return None
    return k8s.core.v1.PersistentVolumeClaim(
        f"{name}-data",
        metadata=meta,
        spec={
            "accessModes": [args.access_mode],
            "resources": {"requests": {"storage": args.storage_size}},
            **({"storageClassName": args.storage_class} if args.storage_class else {}),
        },
        opts=child,
    )


def secret_env(args: KubernetesRuntimeArgs) -> list[tuple[str, str]]:
    """The runtime's environment variables taken from the Secret: (variable, key)."""
    env = [("WALLAROO_ADMIN_TOKEN", "token")]
    if args.secrets_key is not None:
        env.append(("WALLAROO_SECRETS_KEY", "secrets-key"))
    if args.database_url is not None:
        env.append(("WALLAROO_DATABASE_URL", "database-url"))
    env += [(var, _secret_key(var)) for var in (args.object_store_env or {})]
    if args.publishes and args.publish_username is not None:
        env += [("WALLAROO_OCI_USERNAME", "oci-username"), ("WALLAROO_OCI_PASSWORD", "oci-password")]
    return env


def publish_args(args: KubernetesRuntimeArgs) -> list[str]:
    """`runtime serve`'s publishing flags (D49): the registry, the base image, the address edges reach."""
    if not args.publishes:
        return []
    assert args.publish_base_image is not None and args.public_url is not None
    return ["--publish-registry", args.publish_registry, "--publish-base-image", args.publish_base_image,
            "--public-url", args.public_url, *(["--publish-insecure"] if args.publish_insecure else [])]


def pod_template(args: KubernetesRuntimeArgs, labels: dict[str, str], secret: k8s.core.v1.Secret,
                 account: k8s.core.v1.ServiceAccount, claim: k8s.core.v1.PersistentVolumeClaim | None,
                 role: str, resources: dict[str, Any]) -> dict[str, Any]:
    """A runtime pod in `role` (all | serve | scheduler): non-root, no privileges, the Secret's env."""
    places = args.pods and role != "scheduler"  # the scheduler pod runs no pipeline steps
    placement = ["--sidekick-placement", "kubernetes", "--sidekick-image", args.sidekick_image or args.image,
                 "--kube-namespace", args.namespace,
                 "--kube-owner", account.metadata["name"].apply(lambda n: f"ServiceAccount/{n}"),
                 "--task-url", f"http://$(POD_IP):{APP_PORT}"]  # task pods reach this pod itself
    return {
        "metadata": {"labels": {**labels, "wallaroo.ai/role": role}},
        "spec": {
            **({"nodeSelector": args.node_selector} if args.node_selector else {}),
            # one node for every pod of this runtime: SQLite (WAL) is shared by one kernel only;
            # on PostgreSQL + a bucket the pods go wherever the scheduler puts them (D36)
            **({} if args.scale_out else {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": labels},
                "topologyKey": "kubernetes.io/hostname",
            }]}}}),
            "serviceAccountName": account.metadata["name"],
            "automountServiceAccountToken": places,
            "enableServiceLinks": False,  # no other Services' addresses in the models' env
            # a fresh volume is root-owned: fsGroup lets the image's non-root user write it
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID,
                                "runAsGroup": RUNTIME_UID, "fsGroup": RUNTIME_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "runtime",
                "image": args.image,
                # a read-only root: what it writes goes to /data (its volume) or /tmp (scratch, below)
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "args": ["runtime", "serve", "--data-dir", "/data", "--host", "0.0.0.0",
                         "--port", str(APP_PORT), "--role", role,
                         *(["--log-retention", args.log_retention] if args.log_retention else []),
                         *(["--object-store", args.object_store_url] if args.object_store_url else []),
                         *publish_args(args), *(placement if places else [])],
                "env": [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret.metadata["name"], "key": key}}}
                        for name, key in secret_env(args)]
                + ([{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}] if places else []),
                "ports": [{"containerPort": APP_PORT, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
                "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 20},
                "resources": resources,
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "data", **({"emptyDir": {}} if claim is None else
                                            {"persistentVolumeClaim": {"claimName": claim.metadata["name"]}})},
                        # scratch for temporary files (listener runs, migrations), on the node's disk
                        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}}],
        },
    }


def declare_workloads(name: str, args: KubernetesRuntimeArgs, meta: dict[str, Any], labels: dict[str, str],
                      pod: Callable[[str, dict[str, Any]], dict[str, Any]], child: pulumi.ResourceOptions,
                      ) -> tuple[k8s.apps.v1.Deployment, k8s.apps.v1.Deployment | None,
                                 k8s.autoscaling.v2.HorizontalPodAutoscaler | None]:
    """Several replicas: serving pods (`serve`) + one scheduler pod, and an HPA when autoscaled. One
    replica: one pod does both (`all`). The serving Deployment, the scheduler's, the HPA."""
    limits: dict[str, Any] = {"cpu": str(args.cpus), "memory": args.memory}
    if args.gpus:
        limits["nvidia.com/gpu"] = str(args.gpus)
    serving_role = "serve" if args.several else "all"
    deployment = k8s.apps.v1.Deployment(
        f"{name}-serve",
        metadata=meta,
        spec={
            "replicas": None if args.autoscale_max else args.replicas,
            # one `all` pod: never two during a rollout (each would fire cron ticks and settle runs)
            **({} if args.several else {"strategy": {"type": "Recreate"}}),
            "selector": {"matchLabels": {**labels, "wallaroo.ai/role": serving_role}},
            "template": pod(serving_role, {"requests": limits, "limits": limits}),
        },
        opts=child,
    )
    scheduler = None
    if args.several:
        scheduler = k8s.apps.v1.Deployment(
            f"{name}-scheduler",
            metadata=meta,
            spec={
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # never two schedulers, even during a rollout
                "selector": {"matchLabels": {**labels, "wallaroo.ai/role": "scheduler"}},
                "template": pod("scheduler", {"requests": {"cpu": "250m", "memory": "512Mi"},
                                              "limits": {"cpu": "1", "memory": "1Gi"}}),
            },
            opts=child,
        )
    hpa = None
    if args.autoscale_max:
        hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=meta,
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": deployment.metadata["name"]},
                "minReplicas": max(1, args.autoscale_min or 1),
                "maxReplicas": args.autoscale_max,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization",
                                              "averageUtilization": args.autoscale_cpu_utilization}}}],
            },
            opts=child,
        )
    return deployment, scheduler, hpa


def declare_service(name: str, args: KubernetesRuntimeArgs, meta: dict[str, Any], labels: dict[str, str],
                    child: pulumi.ResourceOptions) -> k8s.core.v1.Service:
    """The Service in front of the serving pods."""
    serving_role = "serve" if args.several else "all"
    return k8s.core.v1.Service(
        f"{name}-svc",
        metadata=meta,
        spec={"type": args.service_type, "selector": {**labels, "wallaroo.ai/role": serving_role},
              "ports": [{"port": 80, "targetPort": "http", "name": "http"}]},
        opts=child,
    )


class KubernetesRuntime(pulumi.ComponentResource):
    """Outputs: `url` (in-cluster Service URL), `token` (secret), `namespace`, `connection` (`public_url`
    when given, else `url`). With `publish_registry`, `publish_base_image` and `public_url` it publishes
    pipelines (`WallarooPublish`), logging in with `publish_username`/`publish_password` (kept in its Secret)."""

    def __init__(
        self,
        name: str,
        *,
        image: pulumi.Input[str],
        admin_token: pulumi.Input[str],
        namespace: str = "wallaroo",
        create_namespace: bool = True,
        replicas: int = 1,
        autoscale_min: int | None = None,
        autoscale_max: int | None = None,
        autoscale_cpu_utilization: int = 75,
        cpus: float = 2,
        memory: str = "4Gi",
        gpus: int = 0,
        node_selector: dict[str, str] | None = None,
        storage_size: str = "20Gi",
        storage_class: str | None = None,
        access_mode: str | None = None,
        service_type: str = "ClusterIP",
        log_retention: str | None = None,
        secrets_key: pulumi.Input[str] | None = None,
        sidekick_placement: str = "pods",
        sidekick_image: pulumi.Input[str] | None = None,
        database_url: pulumi.Input[str] | None = None,
        object_store_url: str | None = None,
        object_store_env: dict[str, pulumi.Input[str]] | None = None,
        backing_services: bool = False,
        publish_registry: str | None = None,
        publish_base_image: str | None = None,
        publish_username: pulumi.Input[str] | None = None,
        publish_password: pulumi.Input[str] | None = None,
        publish_insecure: bool = False,
        public_url: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        inputs = dict(locals())
        for own in ("self", "name", "opts", "__class__"):
            inputs.pop(own, None)
        args = KubernetesRuntimeArgs.parse(**inputs)
        # every check above runs before anything is registered with the engine
        super().__init__("wallaroo:index:KubernetesRuntime", name, None, opts)
        labels = {"app.kubernetes.io/name": "wallaroo-runtime", "app.kubernetes.io/instance": name}
        # the stack is the source of truth: `up` takes back a field someone changed by hand (D34)
        force = {"pulumi.com/patchForce": "true"}
        meta = {"namespace": args.namespace, "labels": labels, "annotations": force}

        child = declare_namespace(name, args, force, self)
        args = declare_backing_services(name, args, meta, child)
        secret, account = declare_access(name, args, meta, child)
        claim = declare_storage(name, args, meta, child)

        def pod(role: str, resources: dict[str, Any]) -> dict[str, Any]:
            return pod_template(args, labels, secret, account, claim, role, resources)

        self.deployment, self.scheduler, self.hpa = declare_workloads(name, args, meta, labels, pod, child)
        service = declare_service(name, args, meta, labels, child)
        self.namespace = args.namespace
        self.url: pulumi.Output[str] = service.metadata["name"].apply(
            lambda svc: f"http://{svc}.{args.namespace}.svc.cluster.local"
        )
        self.token: pulumi.Output[str] = pulumi.Output.secret(args.admin_token)
        #: where edges (and, given it, this stack's resources) reach the runtime; known once it serves
        self.public_url: pulumi.Output[str] | None = None if args.public_url is None else \
            self.deployment.metadata["name"].apply(lambda _: args.public_url)
        self.connection = Connection(url=self.public_url or self.url, token=self.token)
        self.register_outputs({"url": self.url, "namespace": args.namespace,
                               **({"public_url": self.public_url} if self.public_url is not None else {})})
