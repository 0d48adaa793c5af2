"""KubernetesRuntime's scale-out inputs are checked before anything is registered, naming the field."""

from __future__ import annotations

import pytest

from wallaroo_pulumi.components.kubernetes_runtime import KubernetesRuntime

DB = "postgresql://wallaroo@db:5432/wallaroo"


@pytest.mark.parametrize(("settings", "message"), [
    ({"database_url": DB, "secrets_key": "k" * 20}, "database_url and object_store_url go together"),
    ({"object_store_url": "s3://bucket"}, "database_url and object_store_url go together"),
    ({"database_url": DB, "object_store_url": "gs://bucket", "secrets_key": "k" * 20},
     "object_store_url: expected s3://bucket"),
    ({"database_url": DB, "object_store_url": "s3://bucket"}, "secrets_key: required with database_url"),
    ({"database_url": DB, "object_store_url": "s3://bucket", "secrets_key": "k" * 20,
      "object_store_env": {"AWS_SECRET": "x"}}, "object_store_env: unknown variable.*AWS_SECRET"),
    ({"backing_services": True}, "backing_services .*give it secrets_key"),
    ({"backing_services": True, "secrets_key": "k" * 20, "database_url": DB}, "and no database_url/object_store_url"),
])
def test_half_a_scale_out_is_refused_naming_the_field(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KubernetesRuntime("rt", image="i:1", admin_token="t", **settings)
