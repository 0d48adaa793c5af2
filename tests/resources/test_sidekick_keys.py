"""How a `WallarooPipeline` keys sidekick settings given for a `WallarooModel` (D47): its name while
the steps hold one version of it; a model that is not a step is refused. (Two versions, keyed by
their version ids once uploaded: tests/resources/test_pipeline_versions.py through the engine.)"""

from __future__ import annotations

import pytest

from wallaroo_pulumi import DeploymentConfigBuilder
from wallaroo_pulumi.resources.sidekick_keys import split_deployment


class Model:
    """What the builder and the pipeline read from a `WallarooModel` before it is uploaded."""

    def __init__(self, name: str) -> None:
        self.model_name = name


def test_a_wallaroo_model_keys_its_settings_by_its_name_when_it_is_the_only_version() -> None:
    llm, validator = Model("llm"), Model("validator")
    built = DeploymentConfigBuilder().sidekick_env(llm, {"KEY": "k"}).sidekick_cpus(llm, 2).sidekick_cpus("validator", 1).build()
    assert set(built["engineAux"]["images"]) == {llm, "validator"}  # the resource stays the key
    public, env = split_deployment(built, [llm, validator, llm])  # one resource in two steps: one version
    assert public["sidekicks"] == {"llm": {"cpus": 2}, "validator": {"cpus": 1}}
    assert env == {"llm": {"KEY": "k"}}


def test_settings_for_a_model_that_is_no_step_are_refused() -> None:
    built = DeploymentConfigBuilder().sidekick_env(Model("other"), {"KEY": "k"}).build()
    with pytest.raises(ValueError, match="WallarooModel 'other', which is not a step of this pipeline"):
        split_deployment(built, [Model("llm")])


def test_a_model_and_its_name_are_one_key_while_it_has_one_version() -> None:
    llm = Model("llm")
    built = DeploymentConfigBuilder().sidekick_cpus(llm, 2).sidekick_cpus("llm", 1).build()
    with pytest.raises(ValueError, match="sidekicks.llm: configured twice"):
        split_deployment(built, [llm])


def test_a_model_name_still_configures_every_version_of_it() -> None:
    stable, canary = Model("scorer"), Model("scorer")  # two resources of one name: two versions
    built = DeploymentConfigBuilder().sidekick_env("scorer", {"KEY": "k"}).sidekick_cpus("scorer", 2).build()
    public, env = split_deployment(built, [stable, canary])
    assert (public["sidekicks"], env) == ({"scorer": {"cpus": 2}}, {"scorer": {"KEY": "k"}})
