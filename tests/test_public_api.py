"""The public API: exactly these names, each importable from the package root."""

import subprocess
import sys

import wallaroo_pulumi

PUBLIC = [
    "BYOP_DIR", "Connection", "DeploymentConfig", "DeploymentConfigBuilder", "Fallback", "KeySplit", "KubernetesRuntime",
    "LLMListenerSchedule", "LLM_INPUT_SCHEMA", "LLM_OUTPUT_SCHEMA", "LocalRuntime", "RandomSplit", "Shadow",
    "SidekickConfig", "WallarooApiKey", "WallarooClient", "WallarooEdge", "WallarooModel", "WallarooOrchestration",
    "WallarooPipeline", "WallarooPublish", "WallarooTask", "curl_command", "listener_schemas",
    "local_or_configured",
]


def test_the_exported_names_are_pinned() -> None:
    assert wallaroo_pulumi.__all__ == PUBLIC
    assert sorted(wallaroo_pulumi._SOURCES) == PUBLIC


def test_every_exported_name_resolves_and_is_listed() -> None:
    for name in PUBLIC:
        assert getattr(wallaroo_pulumi, name) is not None, name
        assert name in dir(wallaroo_pulumi)
    assert (wallaroo_pulumi.BYOP_DIR / "openai_llm").is_dir()


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        wallaroo_pulumi.NotAThing  # noqa: B018
    except AttributeError as exc:
        assert "NotAThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_the_runtime_does_not_import_pulumi() -> None:
    code = "import sys, wallaroo_pulumi.runtime.app; print('pulumi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
