"""`KubernetesRuntime`: the runtime image on a cluster, declared with pulumi-kubernetes (D10).

A Service, the admin token in a Secret, a data volume, a ServiceAccount, and either one `--role all`
Deployment or serving replicas (`--role serve`) plus a one-pod `--role scheduler` Deployment; every
pod on one node, non-root, without privileges. With `sidekick_placement="pods"` (the default) the
serving pods place each model step as pods of its own (D35), under a Role granting exactly that in
the namespace; with "local" the runtime's pods hold no token and run the steps as processes.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from wallaroo_pulumi.deployment import parse_memory_quantity
from wallaroo_pulumi.resources.connection import Connection
from wallaroo_pulumi.runtime.settings import parse_duration

APP_PORT = 8080
RUNTIME_UID = 10001  # the Dockerfile's user and group
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
PLACEMENTS = ("pods", "local")
#: What a runtime placing steps as pods does in its namespace, and nothing else (runtime/kube).
POD_PLACEMENT_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
]


#: What a runtime reads to reach its bucket (object_store_env), kept in the Secret.
OBJECT_STORE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                    "AWS_ENDPOINT_URL_S3", "AWS_REGION")


def _secret_key(var: str) -> str:
    return var.lower().replace("_", "-")


def _check_scale_out(database_url: Any, object_store_url: str | None, object_store_env: dict[str, Any] | None,
                     secrets_key: Any) -> bool:
    """Whether the runtime is scaled out over nodes (a database and a bucket); refuses half of it."""
    if (database_url is None) != (object_store_url is None):
        raise ValueError("KubernetesRuntime: database_url and object_store_url go together: pods on many nodes keep "
                         "metadata in PostgreSQL and artifacts and logs in a bucket; give both, or neither (one node)")
    if object_store_url is not None and not object_store_url.startswith("s3://"):
        raise ValueError(f"KubernetesRuntime: object_store_url: expected s3://bucket[/prefix], got {object_store_url!r}")
    if database_url is not None and secrets_key is None:
        raise ValueError("KubernetesRuntime: secrets_key: required with database_url (pods on other nodes open the "
                         "credentials one pod sealed)")
    unknown = sorted(set(object_store_env or {}) - set(OBJECT_STORE_ENV))
    if unknown:
        raise ValueError(f"KubernetesRuntime: object_store_env: unknown variable(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(OBJECT_STORE_ENV)}")
    return database_url is not None


class KubernetesRuntime(pulumi.ComponentResource):
    """Outputs: `url` (in-cluster Service URL), `token` (secret), `namespace`, `connection`."""

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
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        parse_memory_quantity(memory)  # fail at plan time with the field's message
        if log_retention is not None:
            try:
                parse_duration(log_retention)
            except ValueError as exc:
                raise ValueError(f"KubernetesRuntime: log_retention: {exc}") from None
        if sidekick_placement not in PLACEMENTS:
            raise ValueError(f"KubernetesRuntime: sidekick_placement must be 'pods' (each model step in pods of its "
                             f"own) or 'local' (processes in the runtime's pods); got {sidekick_placement!r}")
        if backing_services and (database_url is not None or object_store_url is not None or secrets_key is None):
            raise ValueError("KubernetesRuntime: backing_services declares a PostgreSQL and a MinIO for the runtime: "
                             "give it secrets_key (their passwords derive from it) and no database_url/object_store_url")
        scale_out = backing_services or _check_scale_out(database_url, object_store_url, object_store_env, secrets_key)
        access_mode = access_mode or "ReadWriteOnce"
        if access_mode not in ACCESS_MODES:
            raise ValueError(f"KubernetesRuntime: access_mode must be one of {', '.join(ACCESS_MODES)}; "
                             f"got {access_mode!r}")
        several = (autoscale_max or replicas) > 1
        if several and access_mode == "ReadWriteOncePod" and not scale_out:
            raise ValueError("KubernetesRuntime: access_mode 'ReadWriteOncePod' lets one pod mount the data "
                             "volume, but several replicas (and their scheduler pod) share it: use "
                             "'ReadWriteOnce' (all pods run on one node) or a single replica")
        # every check above runs before anything is registered with the engine
        super().__init__("wallaroo:index:KubernetesRuntime", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/name": "wallaroo-runtime", "app.kubernetes.io/instance": name}
        # the stack is the source of truth: `up` takes back a field someone changed by hand (D34)
        force = {"pulumi.com/patchForce": "true"}
        meta = {"namespace": namespace, "labels": labels, "annotations": force}

        if create_namespace:
            ns = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": namespace, "annotations": force},
                                       opts=child)
            child = pulumi.ResourceOptions(parent=self, depends_on=[ns])

        if backing_services:  # a small PostgreSQL and MinIO in the namespace (components/kubernetes_backing.py)
            from wallaroo_pulumi.components.kubernetes_backing import declare_backing

            assert secrets_key is not None
            backing = declare_backing(name, namespace, meta, storage_size, storage_class, secrets_key, child)
            database_url, object_store_url = backing.database_url, backing.object_store_url
            object_store_env = backing.object_store_env
        secret = k8s.core.v1.Secret(
            f"{name}-token",
            metadata=meta,
            string_data={"token": pulumi.Output.secret(admin_token),
                         # seals sidekick credentials in runtime.db: a volume snapshot alone opens nothing
                         **({"secrets-key": pulumi.Output.secret(secrets_key)} if secrets_key is not None else {}),
                         # scaled out: where the metadata, artifacts and logs live, and the bucket's credentials
                         **({"database-url": pulumi.Output.secret(database_url)} if database_url is not None else {}),
                         **{_secret_key(var): pulumi.Output.secret(value) for var, value in (object_store_env or {}).items()}},
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
        pods = sidekick_placement == "pods"
        if pods:
            role = k8s.rbac.v1.Role(f"{name}-sidekicks", metadata=meta, rules=POD_PLACEMENT_RULES, opts=child)
            k8s.rbac.v1.RoleBinding(
                f"{name}-sidekicks",
                metadata=meta,
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata["name"]},
                subjects=[{"kind": "ServiceAccount", "name": account.metadata["name"], "namespace": namespace}],
                opts=child,
            )
        # scaled out, a pod's data dir is its own (artifact copies, unshipped log rows): no shared volume
        claim = None if scale_out else k8s.core.v1.PersistentVolumeClaim(
            f"{name}-data",
            metadata=meta,
            spec={
                "accessModes": [access_mode],
                "resources": {"requests": {"storage": storage_size}},
                **({"storageClassName": storage_class} if storage_class else {}),
            },
            opts=child,
        )
        limits: dict[str, Any] = {"cpu": str(cpus), "memory": memory}
        if gpus:
            limits["nvidia.com/gpu"] = str(gpus)

        secret_env = [("WALLAROO_ADMIN_TOKEN", "token")]
        if secrets_key is not None:
            secret_env.append(("WALLAROO_SECRETS_KEY", "secrets-key"))
        if database_url is not None:
            secret_env.append(("WALLAROO_DATABASE_URL", "database-url"))
        secret_env += [(var, _secret_key(var)) for var in (object_store_env or {})]

        def pod(role: str, resources: dict[str, Any]) -> dict[str, Any]:
            places = pods and role != "scheduler"  # the scheduler pod runs no pipeline steps
            placement = ["--sidekick-placement", "kubernetes", "--sidekick-image", sidekick_image or image,
                         "--kube-namespace", namespace,
                         "--kube-owner", account.metadata["name"].apply(lambda n: f"ServiceAccount/{n}")]
            return {
                "metadata": {"labels": {**labels, "wallaroo.ai/role": role}},
                "spec": {
                    **({"nodeSelector": node_selector} if node_selector else {}),
                    # one node for every pod of this runtime: SQLite (WAL) is shared by one kernel only;
                    # on PostgreSQL + a bucket the pods go wherever the scheduler puts them (D36)
                    **({} if scale_out else {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
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
                        "image": image,
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}},
                        "args": ["runtime", "serve", "--data-dir", "/data", "--host", "0.0.0.0",
                                 "--port", str(APP_PORT), "--role", role,
                                 *(["--log-retention", log_retention] if log_retention else []),
                                 *(["--object-store", object_store_url] if object_store_url else []),
                                 *(placement if places else [])],
                        "env": [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret.metadata["name"], "key": key}}}
                                for name, key in secret_env],
                        "ports": [{"containerPort": APP_PORT, "name": "http"}],
                        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 20},
                        "resources": resources,
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }],
                    "volumes": [{"name": "data", **({"emptyDir": {}} if claim is None else
                                                    {"persistentVolumeClaim": {"claimName": claim.metadata["name"]}})}],
                },
            }

        # several replicas: serving pods (`serve`) + one scheduler pod. One replica: one pod does both (`all`).
        serving_role = "serve" if several else "all"
        serving_labels = {**labels, "wallaroo.ai/role": serving_role}
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-serve",
            metadata=meta,
            spec={
                "replicas": None if autoscale_max else replicas,
                # one `all` pod: never two during a rollout (each would fire cron ticks and settle runs)
                **({} if several else {"strategy": {"type": "Recreate"}}),
                "selector": {"matchLabels": serving_labels},
                "template": pod(serving_role, {"requests": limits, "limits": limits}),
            },
            opts=child,
        )
        self.scheduler: k8s.apps.v1.Deployment | None = None
        if several:
            self.scheduler = k8s.apps.v1.Deployment(
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
        self.hpa = None
        if autoscale_max:
            self.hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-hpa",
                metadata=meta,
                spec={
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": self.deployment.metadata["name"]},
                    "minReplicas": max(1, autoscale_min or 1),
                    "maxReplicas": autoscale_max,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization",
                                                  "averageUtilization": autoscale_cpu_utilization}}}],
                },
                opts=child,
            )
        service = k8s.core.v1.Service(
            f"{name}-svc",
            metadata=meta,
            spec={"type": service_type, "selector": serving_labels,
                  "ports": [{"port": 80, "targetPort": "http", "name": "http"}]},
            opts=child,
        )
        self.namespace = namespace
        self.url: pulumi.Output[str] = service.metadata["name"].apply(
            lambda svc: f"http://{svc}.{namespace}.svc.cluster.local"
        )
        self.token: pulumi.Output[str] = pulumi.Output.secret(admin_token)
        self.connection = Connection(url=self.url, token=self.token)
        self.register_outputs({"url": self.url, "namespace": namespace})
