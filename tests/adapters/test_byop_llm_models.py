"""The BYOP folders (components/byop/{vertex,openai,azure}_llm) as the runtime loads them.

Each folder is zipped and uploaded alone, so it may import only the standard library,
``mac`` (Wallaroo's BYOP API) and ``wallaroo_pulumi`` (installed in the runtime).
The mac-level tests run once the ``mac`` package provides ``mac.inference``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from wallaroo_pulumi.adapters import AdapterConfigError
from wallaroo_pulumi.standins import (
    DEFAULT_API_KEY,
    DEFAULT_AZURE_OPENAI_KEY,
    DEFAULT_MODEL,
    AzureStandin,
    OpenAIStandin,
    VertexStandin,
)

BYOP_ROOT = Path(__file__).resolve().parents[2] / "components" / "byop"
FOLDERS = ("vertex_llm", "openai_llm", "azure_llm")
ALLOWED_TOP_LEVEL = {"mac", "wallaroo_pulumi", "typing", "__future__"}


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_imports_only_mac_wallaroo_pulumi_and_stdlib(folder: str) -> None:
    files = sorted((BYOP_ROOT / folder).glob("*.py"))
    assert files, f"no Python in {folder}"
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED_TOP_LEVEL or top in sys.stdlib_module_names, f"{path.name} imports {name}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_is_a_few_lines_on_the_shared_base(folder: str) -> None:
    """main.py names its adapter; the Inference/InferenceBuilder logic is wallaroo_pulumi.adapters.byop's."""
    from wallaroo_pulumi.adapters.byop import LLMInference, LLMInferenceBuilder

    assert len((BYOP_ROOT / folder / "main.py").read_text().splitlines()) < 25
    builder = builder_of(load_byop(folder))
    assert isinstance(builder, LLMInferenceBuilder) and issubclass(type(builder).inference_class, LLMInference)


def load_byop(folder: str) -> ModuleType:
    path = BYOP_ROOT / folder / "main.py"
    spec = importlib.util.spec_from_file_location(f"byop_{folder}_main", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builder_of(module: ModuleType) -> Any:
    from mac.inference.creation import InferenceBuilder

    builders = [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, InferenceBuilder) and obj is not InferenceBuilder
    ]
    assert len(builders) == 1
    return builders[0]()


def _config(folder: str) -> Any:
    return SimpleNamespace(model_path=BYOP_ROOT / folder, framework="custom")


def _set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in list(__import__("os").environ):
        if key.startswith(("OPENAI_", "AZURE", "VERTEX_", "APPLICATION_CREDENTIALS", "GOOGLE_APPLICATION")):
            monkeypatch.delenv(key, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_openai_byop_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIStandin() as server:
        _set_env(monkeypatch, {"OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": DEFAULT_API_KEY, "OPENAI_MODEL": DEFAULT_MODEL})
        inference = builder_of(load_byop("openai_llm")).create(_config("openai_llm"))
        out = inference._predict({"text": np.array(["hello byop"])})
        inference.model.close()
    assert out["generated_text"][0] == "echo: hello byop" and out["error"][0] == ""


def test_vertex_byop_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    with VertexStandin() as server:
        info = server.create_service_account()
        _set_env(monkeypatch, {"APPLICATION_CREDENTIALS": json.dumps(info), "VERTEX_ENDPOINT_URL": server.endpoint_url})
        inference = builder_of(load_byop("vertex_llm")).create(_config("vertex_llm"))
        out = inference._predict({"text": np.array(["hello vertex"])})
        inference.model.close()
    assert out["generated_text"][0] == "echo: hello vertex" and server.tokens_minted == 1


def test_azure_byop_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    with AzureStandin() as server:
        _set_env(
            monkeypatch,
            {
                "AZURE_OPENAI_ENDPOINT": server.azure_openai_endpoint,
                "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini",
                "AZURE_OPENAI_API_KEY": DEFAULT_AZURE_OPENAI_KEY,
            },
        )
        inference = builder_of(load_byop("azure_llm")).create(_config("azure_llm"))
        out = inference._predict({"text": np.array(["hello azure"])})
        inference.model.close()
    assert out["generated_text"][0] == "echo: hello azure"


@pytest.mark.parametrize(("folder", "variable"), [
    ("openai_llm", "OPENAI_API_KEY"), ("vertex_llm", "APPLICATION_CREDENTIALS"), ("azure_llm", "AZURE_OPENAI_ENDPOINT")])
def test_byop_create_fails_naming_missing_variable(monkeypatch: pytest.MonkeyPatch, folder: str, variable: str) -> None:
    _set_env(monkeypatch, {})
    with pytest.raises(AdapterConfigError, match=variable):
        builder_of(load_byop(folder)).create(_config(folder))


def test_byop_missing_text_column_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from mac.exceptions import InferenceDataValidationError

    _set_env(monkeypatch, {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_MODEL": "m"})
    inference = builder_of(load_byop("openai_llm")).create(_config("openai_llm"))
    try:
        with pytest.raises(InferenceDataValidationError, match="'text'"):
            inference._predict({"prompt": np.array(["x"])})
    finally:
        inference.model.close()
