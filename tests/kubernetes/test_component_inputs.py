"""KubernetesRuntime refuses bad settings before it registers anything, naming the field; and
the image's default command is one the component's CLI accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from wallaroo_pulumi.cli import build_parser
from wallaroo_pulumi.components.kubernetes_runtime import KubernetesRuntime
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("settings", "message"), [
    ({"replicas": 3, "access_mode": "ReadWriteOncePod"}, "'ReadWriteOncePod' lets one pod mount"),
    ({"access_mode": "ReadOnlyMany"}, "access_mode must be one of .*got 'ReadOnlyMany'"),
    ({"log_retention": "a month"}, "log_retention: expected a positive duration like 30d"),
    ({"memory": "8GB"}, "'8GB' is not a Kubernetes memory quantity"),
    ({"sidekick_placement": "kubernetes"}, "sidekick_placement must be 'pods' .* or 'local' .*got 'kubernetes'"),
    ({"publish_registry": "r.example/team"}, "publish_base_image: required with publish_registry"),
    ({"publish_registry": "r.example/team", "publish_base_image": "r.example/team/rt:1"},
     "public_url: required with publish_registry: the address edges join"),
    ({"publish_registry": "r", "publish_base_image": "r/rt:1", "public_url": "wallaroo.example.com"},
     "public_url: expected an http:// or https:// URL, got 'wallaroo.example.com'"),
    ({"publish_registry": "r", "publish_base_image": "r/rt:1", "public_url": "https://w", "publish_username": "ci"},
     "publish_username and publish_password go together"),
    ({"publish_password": "p", "publish_username": "ci"}, "publish_username, publish_password: only with publish_registry"),
])
def test_bad_settings_are_refused_before_anything_is_registered(settings: dict, message: str) -> None:
    # no Pulumi program runs here: the checks come before the component registers itself
    with pytest.raises(ValueError, match=message):
        KubernetesRuntime("rt", image="i:1", admin_token="t", **settings)


def test_the_engine_reports_a_bad_setting(pulumi_stack: PulumiStack) -> None:
    pulumi_stack.write_program("""
        from wallaroo_pulumi import KubernetesRuntime
        KubernetesRuntime("rt", image="i:1", admin_token="t", access_mode="ReadOnlyMany")
    """)
    failed = pulumi_stack.preview(check=False)
    assert "KubernetesRuntime: access_mode must be one of" in failed.stdout + failed.stderr
    assert pulumi_stack.resources("kubernetes:") == []


def test_the_images_default_command_parses() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    args = build_parser().parse_args(cmd)
    assert (args.role, args.port, args.data_dir, args.host) == ("all", 8080, "/data", "0.0.0.0")
