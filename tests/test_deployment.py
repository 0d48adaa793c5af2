"""Deployment config: the Wallaroo builder's spelling, Kubernetes quantities, and errors that
name the field."""

from __future__ import annotations

import pydantic
import pytest

from wallaroo_pulumi import engine_config
from wallaroo_pulumi.client.wire import our_config
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


def test_builder_builds_the_sdk_nested_engine_config() -> None:
    class SdkModelVersion:  # the Wallaroo SDK's ModelVersion: uid() is '<name>-<model version id>'
        def uid(self) -> str:
            return "validator-7"

    built = (DeploymentConfigBuilder().cpus(2).memory("2Gi").gpus(0)
             .replica_autoscale_min_max(maximum=4, minimum=1).autoscale_cpu_utilization(60)
             .sidekick_cpus("llm", 1).sidekick_memory("llm", "1Gi").sidekick_gpus(SdkModelVersion(), 1)
             .sidekick_env("llm", {"OPENAI_API_KEY": "sk-x"}).sidekick_max_batch_rows("llm", 16).build())
    assert built["engine"] == {
        "cpu": 2, "gpu": 0, "autoscale": {"replica_min": 1, "replica_max": 4, "type": "cpu", "cpu_utilization": 60},
        "resources": {"limits": {"cpu": 2, "memory": "2Gi", "nvidia.com/gpu": 0},
                      "requests": {"cpu": 2, "memory": "2Gi", "nvidia.com/gpu": 0}},
    }
    assert built["engineAux"]["images"]["llm"]["env"] == [{"name": "OPENAI_API_KEY", "value": "sk-x"}]
    config = engine_config.parse(built, ["llm", "validator"])
    assert (config.cpus, config.memory, config.autoscale_min, config.autoscale_max) == (2, "2Gi", 1, 4)
    assert config.replicas == 1
    assert config.sidekick("llm").env == {"OPENAI_API_KEY": "sk-x"}
    assert config.sidekick("validator").gpus == 1
    assert (config.sidekick("llm").max_batch_rows, config.sidekick("validator").max_batch_rows) == (16, 64)
    assert config.redacted()["sidekicks"]["llm"]["env"] == {"OPENAI_API_KEY": "[secret]"}


def test_engine_config_round_trips_through_our_config() -> None:
    config = DeploymentConfig.model_validate({
        "cpus": 0.5, "memory": "512Mi", "replica_count": 2, "deployment_label": "pool: gpu", "python_load_timeout_secs": 30,
        "lb_cpus": 1, "sidekicks": {"llm": {"cpus": 2, "memory": "1Gi", "env": {"KEY": "v"}, "max_batch_rows": 8}},
    })
    wire = engine_config.from_config(config, lambda name: f"{name}-12")
    image = wire["engineAux"]["images"]["llm-12"]
    assert image["env"] == [{"name": "KEY", "value": "v"}] and image["node_selector"] == "pool: gpu"
    assert wire["engine"]["python"] == {"load_timeout_millis": 30000} and wire["engine"]["replicas"] == 2
    assert engine_config.parse(wire, ["llm"]) == config
    assert engine_config.redacted(wire)["engineAux"]["images"]["llm-12"]["env"] == [{"name": "KEY", "value": "[secret]"}]


@pytest.mark.parametrize(("wire", "words"), [
    ({"engine": {"resources": {"requests": {"memory": "8M"}}}}, "engine.resources.requests.memory: '8M' is below"),
    ({"engineAux": {"images": {"llm-3": {"resources": {"requests": {"memory": "big"}}}}}},
     "engineAux.images.llm-3.resources.requests.memory: 'big' is not a Kubernetes memory quantity"),
    ({"engineAux": {"images": {"llm-3": {"env": [{"name": "BAD NAME", "value": "x"}]}}}},
     "engineAux.images.llm-3.env: env name 'BAD NAME' is not a valid environment variable name"),
    ({"engine": {"autoscale": {"replica_min": 3, "replica_max": 2}}}, "engine.autoscale.replica_min (3) must not exceed"),
    ({"engine": {"image": "ghcr.io/x"}}, "engine.image: engine images are not supported"),
    ({"engineAux": {"images": {"other-1": {}}}}, "engineAux.images.other-1: not a model of this pipeline"),
    ({"engine": {"autoscale": {"scale_up_queue_depth": 3}}},
     "engine.autoscale.scale_up_queue_depth (3) needs engine.autoscale.replica_max"),
    ({"engine": {"autoscale": {"replica_max": 3, "type": "queue"}}}, "engine.autoscale.type: 'queue' needs scale_up_queue_depth"),
    ({"engine": {"autoscale": {"replica_max": 3, "type": "gpu"}}}, "engine.autoscale.type: expected 'cpu'"),
    ({"engine": {"autoscale": {"replica_max": 3, "scale_up_queue_depth": 2, "scale_down_queue_depth": 4}}},
     "engine.autoscale.scale_down_queue_depth (4) must not exceed engine.autoscale.scale_up_queue_depth (2)"),
    ({"engine": {"autoscale": {"replica_max": 3, "autoscaling_window": 60}}},
     "engine.autoscale.autoscaling_window (60) needs engine.autoscale.scale_up_queue_depth"),
    ({"engine": {"cpux": 1}}, "engine.cpux: unknown setting"),
    ({"engine": {"resources": {"requests": {"cpu": 1}, "limits": {"cpu": 2}}}}, "engine.resources.limits.cpu: 2 differs"),
    ({"engine": {"resources": {"requests": {"amd.com/gpu": 1}}}}, "NVIDIA GPUs only"),
])
def test_bad_engine_config_names_its_place(wire: dict, words: str) -> None:
    with pytest.raises(engine_config.EngineConfigError) as err:
        engine_config.parse(wire, ["llm"])
    assert words in str(err.value)


def test_queue_depth_autoscaling_as_the_sdks_builder_writes_it() -> None:
    """DeploymentConfigBuilder().replica_autoscale_min_max(3).scale_up_queue_depth(5).autoscaling_window(60)."""
    wire = {"engine": {"autoscale": {"replica_min": 0, "replica_max": 3, "type": "queue", "scale_up_queue_depth": 5,
                                     "scale_down_queue_depth": 1, "autoscaling_window": 60}}}
    config = engine_config.parse(wire, ["llm"])
    assert (config.autoscale_max, config.scale_up_queue_depth, config.scale_down_queue_depth,
            config.autoscaling_window) == (3, 5, 1, 60)
    assert engine_config.from_config(config, lambda name: f"{name}-1")["engine"]["autoscale"] == wire["engine"]["autoscale"]


def test_the_builders_queue_depth_methods_write_what_the_sdks_do() -> None:
    built = DeploymentConfigBuilder().replica_autoscale_min_max(3).scale_up_queue_depth(5).autoscaling_window(60).build()
    assert built["engine"]["autoscale"] == {"replica_min": 0, "replica_max": 3, "type": "queue",
                                            "scale_up_queue_depth": 5, "scale_down_queue_depth": 1,
                                            "autoscaling_window": 60}
    with pytest.raises(ValueError, match="autoscaling_window: call scale_up_queue_depth first"):
        DeploymentConfigBuilder().replica_autoscale_min_max(3).autoscaling_window(60)


def test_a_sidekick_key_is_the_model_or_model_dash_version_id() -> None:
    model_of = engine_config.model_resolver(["llm", "llm-2"])
    assert [model_of(k) for k in ("llm", "llm-14", "llm-2", "llm-2-3")] == ["llm", "llm", "llm-2", "llm-2"]
    assert engine_config.is_engine_config({"engine": {}}) and not engine_config.is_engine_config({"cpus": 1})


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"cpus": 0}, "cpus", "greater than 0"),
    ({"gpus": -1}, "gpus", "greater than or equal to 0"),
    ({"memory": "8M"}, "memory", "16Mi minimum"),
    ({"autoscale_min": 3, "autoscale_max": 2}, "", "must not exceed autoscale_max"),
    ({"autoscale_min": 1}, "", "needs autoscale_max"),
    ({"sidekicks": {"llm": {"memory": "big"}}}, "sidekicks.llm.memory", "Kubernetes memory quantity"),
    ({"sidekicks": {"llm": {"env": {"BAD NAME": "x"}}}}, "sidekicks.llm.env", "not a valid environment variable"),
    ({"sidekicks": {"llm": {"max_batch_rows": 0}}}, "sidekicks.llm.max_batch_rows", "greater than or equal to 1"),
    ({"sidekicks": {"llm": {"scratch_size": "lots"}}}, "sidekicks.llm.scratch_size", "Kubernetes memory quantity"),
    ({"sidekicks": {"llm": {"scratch_size": "1Ki"}}}, "sidekicks.llm.scratch_size", "below the 1Mi minimum"),
    ({"sidekicks": {"llm": {"max_processes": 2}}}, "sidekicks.llm.max_processes", "greater than or equal to 8"),
    ({"cpu": 1}, "cpu", "Extra inputs are not permitted"),
])
def test_bad_config_names_the_field(data: dict, field: str, words: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        DeploymentConfig.model_validate(data)
    error = err.value.errors()[0]
    assert ".".join(str(p) for p in error["loc"]) == field
    assert words in error["msg"]


def test_scratch_size_and_max_processes_are_ours_with_protective_defaults_and_round_trip() -> None:
    """Wallaroo's builder has neither: ours alone, sent only when set, bounded by default (issue 28)."""
    default = DeploymentConfig().sidekick("llm")
    assert (default.scratch_size, default.max_processes) == ("1Gi", 512)
    built = (DeploymentConfigBuilder().sidekick_scratch_size("llm", "256Mi").sidekick_max_processes("llm", 64)
             .sidekick_cpus("validator", 1).build())
    assert built["engineAux"]["images"]["llm"] == {"scratch_size": "256Mi", "max_processes": 64}
    config = engine_config.parse(built, ["llm", "validator"])
    assert (config.sidekick("llm").scratch_size, config.sidekick("llm").max_processes) == ("256Mi", 64)
    assert (config.sidekick("validator").scratch_size, config.sidekick("validator").max_processes) == ("1Gi", 512)
    wire = engine_config.from_config(config, lambda name: f"{name}-3")
    assert wire["engineAux"]["images"]["llm-3"]["scratch_size"] == "256Mi"
    assert "scratch_size" not in wire["engineAux"]["images"]["validator-3"]  # the default is not sent
    assert engine_config.parse(wire, ["llm", "validator"]) == config
    with pytest.raises(engine_config.EngineConfigError, match=r"engineAux\.images\.llm\.max_processes"):
        engine_config.parse({"engineAux": {"images": {"llm": {"max_processes": 1}}}}, ["llm"])


def test_model_concurrency_is_per_model_sent_only_when_set_and_checked() -> None:
    """D61: how many batches a model's worker answers at once; unset, the model's own declaration."""
    assert DeploymentConfig().sidekick("llm").model_concurrency is None
    built = DeploymentConfigBuilder().sidekick_model_concurrency("llm", 8).sidekick_cpus("validator", 1).build()
    assert built["engineAux"]["images"]["llm"] == {"model_concurrency": 8}
    config = engine_config.parse(built, ["llm", "validator"])
    assert (config.sidekick("llm").model_concurrency, config.sidekick("validator").model_concurrency) == (8, None)
    wire = engine_config.from_config(config, lambda name: f"{name}-3")
    assert wire["engineAux"]["images"]["llm-3"]["model_concurrency"] == 8
    assert "model_concurrency" not in wire["engineAux"]["images"]["validator-3"]
    for bad in (0, 257, "many"):
        with pytest.raises(engine_config.EngineConfigError, match=r"engineAux\.images\.llm\.model_concurrency"):
            engine_config.parse({"engineAux": {"images": {"llm": {"model_concurrency": bad}}}}, ["llm"])


def test_two_versions_of_one_model_each_take_their_own_sidekick_key() -> None:
    """The SDK keys `engineAux.images` by `model_version.uid()`: with versions 3 and 4 of `llm` in the
    pipeline, 'llm-3' and 'llm-4' configure one version each; the bare name configures the rest."""
    wire = {"engineAux": {"images": {"llm-3": {"env": [{"name": "V", "value": "3"}]},
                                     "llm-4": {"env": [{"name": "V", "value": "4"}]},
                                     "validator-7": {"env": [{"name": "V", "value": "validator"}]}}}}
    config = engine_config.parse(wire, ["llm", "validator"], {"llm": {3, 4, 5}, "validator": {7}})
    assert [config.sidekick("llm", v).env for v in (3, 4, 5)] == [{"V": "3"}, {"V": "4"}, {}]
    assert config.sidekick("validator", 7).env == {"V": "validator"}  # one version: keyed by the model, as before
    assert set(config.sidekicks) == {"llm-3", "llm-4", "validator"}
    # one version of a model in the pipeline: its key (any id, as a stale uid) is the model's, as before
    single = engine_config.parse({"engineAux": {"images": {"llm-9": {"env": [{"name": "V", "value": "9"}]}}}},
                                 ["llm"], {"llm": {3}})
    assert single.sidekick("llm", 3).env == {"V": "9"} and set(single.sidekicks) == {"llm"}
    with pytest.raises(engine_config.EngineConfigError, match="engineAux.images.llm-9: model 'llm' is configured twice"):
        engine_config.parse({"engineAux": {"images": {"llm": {}, "llm-9": {}}}}, ["llm"], {"llm": {3, 4}})
    # read back (the client's Pipeline.engine_config): the keys themselves say which versions are apart
    read = {"engineAux": {"images": {"llm-3": {"env": [{"name": "V", "value": "[secret]"}]},
                                     "llm-4": {"env": [{"name": "V", "value": "[secret]"}]}}}}
    assert engine_config.versions_named(read, ["llm"]) == {"llm": {3, 4}}
    assert set(our_config(read, ["llm"])["sidekicks"]) == {"llm-3", "llm-4"}



def test_settings_for_one_of_two_versions_read_back_as_that_version_s() -> None:
    """A pipeline holding two versions of `llm` (its name twice among the step refs) with settings for
    one of them: read back, the key still names that version, not every version of the model."""
    read = {"engineAux": {"images": {"llm-4": {"env": [{"name": "V", "value": "[secret]"}]}}}}
    assert set(our_config(read, ["llm", "llm"])["sidekicks"]) == {"llm-4"}
    assert set(our_config(read, ["llm"])["sidekicks"]) == {"llm"}  # one version: the model's, as before
    # the runtime writes a bare name of a model with several versions as it is (it configures them all)
    key_of = engine_config.key_of_steps([{"name": "llm", "model_version_id": 3}, {"name": "llm", "model_version_id": 4},
                                         {"name": "validator", "model_version_id": 7}])
    assert [key_of(k) for k in ("llm", "llm-4", "validator")] == ["llm", "llm-4", "validator-7"]
