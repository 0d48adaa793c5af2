"""A small PostgreSQL and MinIO for `KubernetesRuntime(backing_services=True)`: enough for a
small cluster to run the runtime's replicas on many nodes without managed services (D36, D37).

One PostgreSQL pod (a StatefulSet with its own volume) and one MinIO pod (a Deployment with a
volume), each behind a Service in the runtime's namespace. Their passwords are derived from the
runtime's `secrets_key` (HMAC-SHA256), so they are stable across `pulumi up` and stored only as
secrets. Neither is replicated: for production, give the URLs of managed ones instead.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

POSTGRES_IMAGE = "postgres:16-alpine"
MINIO_IMAGE = "minio/minio:RELEASE.2025-04-22T22-12-26Z"
BUCKET = "wallaroo"


@dataclass
class Backing:
    database_url: pulumi.Output[str]
    object_store_url: str
    object_store_env: dict[str, pulumi.Input[str]]


def _derived(secrets_key: pulumi.Input[str], purpose: str) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.from_input(secrets_key).apply(
        lambda key: hmac.new(key.encode(), purpose.encode(), hashlib.sha256).hexdigest()))


def declare_backing(name: str, namespace: str, meta: dict[str, Any], storage_size: str, storage_class: str | None,
                    secrets_key: pulumi.Input[str], opts: pulumi.ResourceOptions) -> Backing:
    db_password = _derived(secrets_key, "wallaroo-postgres")
    minio_password = _derived(secrets_key, "wallaroo-minio")
    secret = k8s.core.v1.Secret(f"{name}-backing", metadata=meta, opts=opts,
                                string_data={"postgres-password": db_password, "minio-password": minio_password})
    volume = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage_size}},
              **({"storageClassName": storage_class} if storage_class else {})}

    def from_secret(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": secret.metadata["name"], "key": key}}

    def service(part: str, port: int) -> k8s.core.v1.Service:
        labels = {**meta["labels"], "wallaroo.ai/part": part}
        return k8s.core.v1.Service(f"{name}-{part}", metadata={**meta, "labels": labels}, opts=opts,
                                   spec={"selector": labels, "ports": [{"port": port, "targetPort": port}]})

    pg_labels = {**meta["labels"], "wallaroo.ai/part": "postgres"}
    pg_service = service("postgres", 5432)
    k8s.apps.v1.StatefulSet(f"{name}-postgres", metadata={**meta, "labels": pg_labels}, opts=opts, spec={
        "serviceName": pg_service.metadata["name"], "replicas": 1, "selector": {"matchLabels": pg_labels},
        "template": {"metadata": {"labels": pg_labels}, "spec": {"containers": [{
            "name": "postgres", "image": POSTGRES_IMAGE,
            "env": [{"name": "POSTGRES_USER", "value": "wallaroo"}, {"name": "POSTGRES_DB", "value": "wallaroo"},
                    {"name": "POSTGRES_PASSWORD", "valueFrom": from_secret("postgres-password")},
                    {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
            "ports": [{"containerPort": 5432}],
            "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "wallaroo"]}, "periodSeconds": 5},
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
        }]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": volume}],
    })
    minio_labels = {**meta["labels"], "wallaroo.ai/part": "minio"}
    minio_service = service("minio", 9000)
    claim = k8s.core.v1.PersistentVolumeClaim(f"{name}-minio", metadata=meta, spec=volume, opts=opts)
    k8s.apps.v1.Deployment(f"{name}-minio", metadata={**meta, "labels": minio_labels}, opts=opts, spec={
        "replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": minio_labels},
        "template": {"metadata": {"labels": minio_labels}, "spec": {"containers": [{
            "name": "minio", "image": MINIO_IMAGE, "args": ["server", "/data"],
            "env": [{"name": "MINIO_ROOT_USER", "value": "wallaroo"},
                    {"name": "MINIO_ROOT_PASSWORD", "valueFrom": from_secret("minio-password")}],
            "ports": [{"containerPort": 9000}],
            "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000}, "periodSeconds": 5},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }], "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim.metadata["name"]}}]}},
    })
    database_url = pulumi.Output.secret(pulumi.Output.all(pg_service.metadata["name"], db_password).apply(
        lambda parts: f"postgresql://wallaroo:{parts[1]}@{parts[0]}.{namespace}.svc.cluster.local:5432/wallaroo"))
    endpoint = minio_service.metadata["name"].apply(lambda svc: f"http://{svc}.{namespace}.svc.cluster.local:9000")
    return Backing(database_url, f"s3://{BUCKET}",
                   {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "wallaroo",
                    "AWS_SECRET_ACCESS_KEY": minio_password})
