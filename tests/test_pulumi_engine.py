"""The foundation: the real Pulumi engine (our build + our Python language host) runs stacks offline."""

from __future__ import annotations

from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

PROGRAM = """
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

class Provider(ResourceProvider):
    def create(self, props):
        return CreateResult(id_="thing-1", outs={**props, "generation": 1})
    def diff(self, id, olds, news):
        changed = [k for k in ("greeting",) if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[])
    def update(self, id, olds, news):
        return UpdateResult(outs={**news, "generation": olds["generation"] + 1})

class Thing(Resource):
    def __init__(self, name, greeting):
        super().__init__(Provider(), name, {"greeting": greeting, "generation": None})

thing = Thing("thing", pulumi.Config().require("greeting"))
pulumi.export("greeting", thing.greeting)
pulumi.export("generation", thing.generation)
"""


def test_version_is_pinned(pulumi_stack: PulumiStack) -> None:
    pinned = (pulumi_stack.env["WALLAROO_REPO"] + "/scripts/pulumi-version")
    assert pulumi_stack.run("version").stdout.strip() == open(pinned).read().strip()


def test_create_noop_update_destroy(pulumi_stack: PulumiStack) -> None:
    pulumi_stack.write_program(PROGRAM)
    pulumi_stack.config_set("greeting", "hello")

    created = pulumi_stack.up()
    assert created.change_summary == {"create": 2}
    assert pulumi_stack.outputs() == {"greeting": "hello", "generation": 1}

    again = pulumi_stack.preview()
    assert again.change_summary == {"same": 2}

    pulumi_stack.config_set("greeting", "bonjour")
    planned = pulumi_stack.preview()
    assert planned.ops("dynamic") == {"thing": "update"}
    updated = pulumi_stack.up()
    assert updated.change_summary.get("update") == 1
    assert pulumi_stack.outputs() == {"greeting": "bonjour", "generation": 2}

    gone = pulumi_stack.destroy()
    assert gone.change_summary.get("delete") == 2
    assert pulumi_stack.resources() == []


def test_program_error_fails_the_update(pulumi_stack: PulumiStack) -> None:
    pulumi_stack.write_program("raise ValueError('boom from the program')\n")
    result = pulumi_stack.up(check=False)
    messages = " ".join(d.get("message", "") for d in result.diagnostics) + result.stdout + result.stderr
    assert "boom from the program" in messages
    assert pulumi_stack.run("stack", "--show-ids", check=False).returncode == 0
