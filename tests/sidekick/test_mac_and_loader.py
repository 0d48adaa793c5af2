"""The ``mac`` compatibility package, the Arrow conversion rules and artifact unpacking."""

from __future__ import annotations

import io
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from mac.config.inference import CustomInferenceConfig
from mac.exceptions import (
    InferenceBuilderError,
    InferenceDataValidationError,
    ModelNotAssignedError,
    ModelTypeError,
)
from mac.inference import Inference
from mac.inference.creation import InferenceBuilder, resolve_inference
from wallaroo_pulumi.runtime.sidekick import protocol
from wallaroo_pulumi.runtime.sidekick.loader import UnsafeArtifactError, find_model_root, unpack_artifact
from wallaroo_pulumi.runtime.sidekick.redact import EnvRedactor
from wallaroo_pulumi.testing.byop import inference_class

from .sidekick_helpers import write_model

Doubler = inference_class("Doubler", 'return {"y": input_data["x"] * self.model}', model_types="int")
ListReturner = inference_class("ListReturner", 'return {"y": [1, 2]}', model_types="int")


# -- mac -------------------------------------------------------------------------------
def test_inference_model_setter_checks_type() -> None:
    inf = Doubler()
    assert inf.model is None
    with pytest.raises(ModelTypeError, match=r"Doubler.model must be an instance of one of \[int\]; got builtins.str"):
        inf.model = "three"
    with pytest.raises(TypeError):  # also a TypeError, as other versions raise
        inf.model = 2.5
    inf.model = 3
    assert inf.model == 3
    assert inf.predict({"x": np.array([1, 2])})["y"].tolist() == [3, 6]


def test_inference_predict_validates_both_sides() -> None:
    inf = Doubler()
    with pytest.raises(ModelNotAssignedError, match="create\\(\\) must set `inference.model"):
        inf.predict({"x": np.array([1])})
    inf.model = 2
    with pytest.raises(InferenceDataValidationError, match="must be a dict of numpy arrays"):
        inf.predict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InferenceDataValidationError, match=r"input: field 'x' must be a numpy.ndarray; got list"):
        inf.predict({"x": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(InferenceDataValidationError, match="keys must be strings"):
        inf.predict({1: np.array([1])})  # type: ignore[dict-item]
    bad = ListReturner()
    bad.model = 1
    with pytest.raises(InferenceDataValidationError, match=r"ListReturner._predict output: field 'y'"):
        bad.predict({"x": np.array([1])})


def test_abstract_members_are_enforced() -> None:
    class NoPredict(Inference):
        @property
        def expected_model_types(self) -> set[Any]:
            return {int}

    with pytest.raises(TypeError, match="_predict"):
        NoPredict()  # type: ignore[abstract]

    class NoCreate(InferenceBuilder):
        @property
        def inference(self) -> type[Inference]:
            return Doubler

    with pytest.raises(TypeError, match="create"):
        NoCreate()  # type: ignore[abstract]


def test_custom_inference_config(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("")
    (tmp_path / "weights.bin").write_bytes(b"")
    config = CustomInferenceConfig(framework="custom", model_path=tmp_path)
    assert config.framework == "custom" and isinstance(config.model_path, Path)
    assert config.modules_to_include == {tmp_path / "main.py"}
    assert CustomInferenceConfig(model_path=str(tmp_path)).framework == "custom"
    with pytest.raises(ValueError, match="framework must be 'custom'"):
        CustomInferenceConfig(framework="onnx", model_path=tmp_path)
    with pytest.raises(ValueError, match="is not a directory"):
        CustomInferenceConfig(framework="custom", model_path=tmp_path / "main.py")


@pytest.mark.parametrize("style", ["class", "instance", "returns-none", "returns-class"])
def test_resolve_inference_accepts_both_builder_styles(tmp_path: Path, style: str) -> None:
    class Builder(InferenceBuilder):
        @property
        def inference(self) -> Any:
            return Doubler if style in ("class", "returns-class") else Doubler()

        def create(self, config: CustomInferenceConfig) -> Any:
            if style == "returns-class":
                return Doubler
            inf = self.inference() if style == "class" else self.inference
            inf.model = 2
            return None if style == "returns-none" else inf

    made = resolve_inference(Builder(), CustomInferenceConfig(model_path=tmp_path))
    assert isinstance(made, Doubler)


def test_resolve_inference_rejects_other_objects(tmp_path: Path) -> None:
    class Builder(InferenceBuilder):
        @property
        def inference(self) -> Any:
            return Doubler

        def create(self, config: CustomInferenceConfig) -> Any:
            return {"not": "an inference"}

    with pytest.raises(InferenceBuilderError, match=r"Builder.create\(\) returned dict; expected an instance"):
        resolve_inference(Builder(), CustomInferenceConfig(model_path=tmp_path))


def test_repo_byop_folders_import_under_our_mac() -> None:
    """The repo's own BYOP folders (written against Wallaroo's mac) import unchanged."""
    root = Path(__file__).resolve().parents[2] / "components" / "byop"
    folders = sorted({p.parent for p in root.rglob("*.py")})
    assert folders, "no BYOP folders found"
    script = textwrap.dedent("""
        import sys
        from wallaroo_pulumi.runtime.sidekick.loader import find_builder, import_model_modules
        folder = sys.argv[1]
        print(find_builder(import_model_modules(folder, "m"), folder, "m").__name__)
    """)
    for folder in folders:
        result = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{folder}: {result.stderr[-2000:]}"
        assert result.stdout.strip().endswith("Builder"), result.stdout


# -- conversion ------------------------------------------------------------------------
def test_arrow_to_numpy_rules() -> None:
    table = pa.table({
        "i": pa.array([1, 2, 3], pa.int64()),
        "i_null": pa.array([1, None, 3], pa.int64()),
        "s": pa.array(["a", None, "c"]),
        "reg": pa.array([[1.0, 2.0]] * 3, pa.list_(pa.float64())),
        "fixed": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int32(), 2)),
        "rag": pa.array([[1], [], None], pa.list_(pa.int64())),
        "nested": pa.array([[[1, 2], [3, 4]]] * 3, pa.list_(pa.list_(pa.int64()))),
    })
    data = protocol.table_to_inference_data(table)
    assert data["i"].dtype == np.int64 and data["i"].tolist() == [1, 2, 3]
    assert data["i_null"].dtype.kind == "f" and np.isnan(data["i_null"][1])
    assert data["s"].dtype == object and data["s"].tolist() == ["a", None, "c"]
    assert data["reg"].shape == (3, 2) and data["reg"].dtype == np.float64
    assert data["fixed"].shape == (3, 2) and data["fixed"].dtype == np.int32
    assert data["rag"].dtype == object and data["rag"][0].tolist() == [1] and data["rag"][1].tolist() == []
    assert data["rag"][2] is None
    assert data["nested"].shape == (3, 2, 2)


def test_numpy_to_arrow_rules() -> None:
    out = protocol.inference_data_to_table({
        "f": np.array([0.5, 1.5]),
        "u": np.array(["x", "yy"]),
        "o": np.array(["x", None], dtype=object),
        "m": np.arange(6, dtype=np.int64).reshape(2, 3),
        "t": np.zeros((2, 2, 2), dtype=np.float32),
        "ragged": np.array([np.array([1, 2]), np.array([3])], dtype=object),
        "b": np.array([True, False]),
    }, 2)
    assert out.schema.field("f").type == pa.float64()
    assert out.schema.field("u").type == pa.string() and out.column("u").to_pylist() == ["x", "yy"]
    assert out.column("o").to_pylist() == ["x", None]
    assert out.schema.field("m").type == pa.list_(pa.int64()) and out.column("m").to_pylist() == [[0, 1, 2], [3, 4, 5]]
    assert out.column("t").to_pylist() == [[[0, 0], [0, 0]]] * 2
    assert out.column("ragged").to_pylist() == [[1, 2], [3]]
    assert out.schema.field("b").type == pa.bool_()
    with pytest.raises(protocol.ConversionError, match="output field 'f' has 2 rows but the input batch has 3"):
        protocol.inference_data_to_table({"f": np.array([0.5, 1.5])}, 3)
    with pytest.raises(protocol.ConversionError, match="output field 'z' is a scalar"):
        protocol.inference_data_to_table({"z": np.float64(1.0)}, 1)


def test_frames_round_trip() -> None:
    buf = io.BytesIO()
    protocol.write_frame(buf, protocol.READY, b'{"pid": 1}')
    protocol.write_frame(buf, protocol.RESPONSE, b"answer", rid=2**32 - 1)
    protocol.write_frame(buf, protocol.SHUTDOWN)
    buf.seek(0)
    assert protocol.read_frame(buf) == (protocol.READY, 0, b'{"pid": 1}')
    assert protocol.read_frame(buf) == (protocol.RESPONSE, 2**32 - 1, b"answer")
    assert protocol.read_frame(buf) == (protocol.SHUTDOWN, 0, b"")
    assert protocol.read_frame(buf) is None
    with pytest.raises(protocol.ProtocolError, match="unknown frame type"):
        protocol.read_frame(io.BytesIO(b"Z\x00\x00\x00\x01\x00\x00\x00\x00"))
    with pytest.raises(protocol.ProtocolError, match="stream ended inside"):
        protocol.read_frame(io.BytesIO(b"P\x00\x00\x00\x01\x00\x00\x00\x09abc"))


def test_redactor_policy() -> None:
    redact = EnvRedactor.for_env({
        "OPENAI_API_KEY": "sk-abcd1234", "DB_PASSWORD": "hunter2x", "SHORT_KEY": "abc",
        "LISTENER_TEXT_FIELD": "text", "MAX_TOKENS": "12800000", "ENDPOINT_URL": "https://llm.internal/v1",
    })
    text = redact("key sk-abcd1234 pw hunter2x abc field text tokens 12800000 at https://llm.internal/v1/chat")
    assert text == "key [REDACTED] pw [REDACTED] abc field text tokens 12800000 at [REDACTED]/chat"


# -- unpacking -------------------------------------------------------------------------
def make_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_unpack_flat_and_wrapped(tmp_path: Path) -> None:
    flat = make_zip(tmp_path / "flat.zip", {"main.py": b"x = 1\n", "requirements.txt": b"", "data/w.bin": b"\0"})
    root = unpack_artifact(flat, tmp_path / "a")
    assert root == (tmp_path / "a").resolve() and (root / "data" / "w.bin").exists()

    wrapped = make_zip(tmp_path / "wrapped.zip", {
        "my-model/main.py": b"x = 1\n", "my-model/helpers.py": b"", "__MACOSX/my-model/._main.py": b"junk",
    })
    root = unpack_artifact(wrapped, tmp_path / "b")
    assert root.name == "my-model" and (root / "helpers.py").exists()
    assert not (tmp_path / "b" / "__MACOSX").exists()


@pytest.mark.parametrize("bad_name, expected", [
    ("../evil.py", "contains '..'"),
    ("ok/../../evil.py", "contains '..'"),
    ("/etc/evil.py", "absolute path"),
    ("C:/evil.py", "absolute path"),
])
def test_unpack_rejects_escaping_entries(tmp_path: Path, bad_name: str, expected: str) -> None:
    zpath = make_zip(tmp_path / "bad.zip", {"main.py": b"", bad_name: b"pwned"})
    with pytest.raises(UnsafeArtifactError, match=expected):
        unpack_artifact(zpath, tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()


def test_unpack_rejects_symlinks(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "link.zip", {"main.py": b""}, symlinks={"secrets": "/etc/passwd"})
    with pytest.raises(UnsafeArtifactError, match="symlink"):
        unpack_artifact(zpath, tmp_path / "out")


def test_unpack_size_cap(tmp_path: Path) -> None:
    zpath = make_zip(tmp_path / "big.zip", {"main.py": b"", "zeros.bin": b"\0" * (4 * 2**20)})
    with pytest.raises(UnsafeArtifactError, match="over the 1048576-byte cap"):
        unpack_artifact(zpath, tmp_path / "out", max_bytes=2**20)
    assert unpack_artifact(zpath, tmp_path / "ok", max_bytes=8 * 2**20).joinpath("zeros.bin").stat().st_size == 4 * 2**20


def test_unpack_rejects_lying_sizes(tmp_path: Path) -> None:
    """An entry whose header under-declares its size is caught while streaming."""
    zpath = tmp_path / "liar.zip"
    make_zip(zpath, {"main.py": b"", "big.bin": b"\0" * 100_000})
    raw = bytearray(zpath.read_bytes())
    # Patch the central directory's uncompressed size of big.bin down to 10 bytes.
    with zipfile.ZipFile(zpath) as zf:
        info = zf.getinfo("big.bin")
    cd = raw.rfind(b"PK\x01\x02", 0, raw.rfind(b"big.bin"))
    raw[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    zpath.write_bytes(bytes(raw))
    assert info.file_size == 100_000
    with pytest.raises(UnsafeArtifactError, match="declared size|corrupt"):
        unpack_artifact(zpath, tmp_path / "out")


def test_unpack_rejects_non_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(UnsafeArtifactError, match="not a readable zip file"):
        unpack_artifact(path, tmp_path / "out")


def test_find_model_root_descends_single_folders(tmp_path: Path) -> None:
    write_model(tmp_path / "outer" / "inner", "return input_data")
    assert find_model_root(tmp_path) == tmp_path / "outer" / "inner"
    (tmp_path / "other").mkdir()
    assert find_model_root(tmp_path) == tmp_path  # two folders: ambiguous, stay at the top
