"""Deployment config: the Wallaroo builder's spelling, Kubernetes quantities, and errors that
name the field."""

from __future__ import annotations

import pydantic
import pytest

from wallaroo_pulumi.deployment import DeploymentConfig, DeploymentConfigBuilder, parse_memory_quantity


@pytest.mark.parametrize(("text", "expected"), [
    ("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1000M", 10**9), ("1.5Gi", int(1.5 * 2**30)), ("64Ki", 65536),
])
def test_memory_quantities_are_kubernetes_spelling(text: str, expected: int) -> None:
    assert parse_memory_quantity(text) == expected


@pytest.mark.parametrize("text", ["lots", "2GB", "-1Gi", "", "1 Gi x"])
def test_bad_memory_quantity_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="Kubernetes memory quantity.*512Mi"):
        parse_memory_quantity(text)


def test_builder_matches_wallaroo_names_and_keys_sidekicks_by_model_name() -> None:
    class Model:  # what the builder reads from a WallarooModel
        model_name = "llm"

    built = (DeploymentConfigBuilder().cpus(2).memory("2Gi").gpus(0)
             .replica_autoscale_min_max(maximum=4, minimum=1).autoscale_cpu_utilization(60)
             .sidekick_cpus(Model(), 1).sidekick_memory(Model(), "1Gi").sidekick_gpus("validator", 1)
             .sidekick_env(Model(), {"OPENAI_API_KEY": "sk-x"}).sidekick_max_batch_rows(Model(), 16).build())
    config = DeploymentConfig.model_validate(built)
    assert (config.cpus, config.memory, config.autoscale_min, config.autoscale_max) == (2, "2Gi", 1, 4)
    assert config.replicas == 1
    assert config.sidekick("llm").env == {"OPENAI_API_KEY": "sk-x"}
    assert config.sidekick("validator").gpus == 1
    assert (config.sidekick("llm").max_batch_rows, config.sidekick("validator").max_batch_rows) == (16, 64)
    assert config.redacted()["sidekicks"]["llm"]["env"] == {"OPENAI_API_KEY": "[secret]"}


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"cpus": 0}, "cpus", "greater than 0"),
    ({"gpus": -1}, "gpus", "greater than or equal to 0"),
    ({"memory": "8M"}, "memory", "16Mi minimum"),
    ({"autoscale_min": 3, "autoscale_max": 2}, "", "must not exceed autoscale_max"),
    ({"autoscale_min": 1}, "", "needs autoscale_max"),
    ({"sidekicks": {"llm": {"memory": "big"}}}, "sidekicks.llm.memory", "Kubernetes memory quantity"),
    ({"sidekicks": {"llm": {"env": {"BAD NAME": "x"}}}}, "sidekicks.llm.env", "not a valid environment variable"),
    ({"sidekicks": {"llm": {"max_batch_rows": 0}}}, "sidekicks.llm.max_batch_rows", "greater than or equal to 1"),
    ({"cpu": 1}, "cpu", "Extra inputs are not permitted"),
])
def test_bad_config_names_the_field(data: dict, field: str, words: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        DeploymentConfig.model_validate(data)
    error = err.value.errors()[0]
    assert ".".join(str(p) for p in error["loc"]) == field
    assert words in error["msg"]
