"""The one BYOP loader: turn a model folder (or an uploaded zip) into a ready ``mac`` inference.

:func:`unpack_artifact` extracts a zip safely; :func:`load_inference` imports the folder's top-level
``.py`` files, takes its one concrete ``InferenceBuilder`` and runs ``create()``. Every failure is a
:class:`ModelLoadError` quoting the Python error and the model's own traceback lines.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import stat
import sys
import traceback
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_UNPACKED_BYTES = int(os.environ.get("WALLAROO_MAX_UNPACKED_BYTES", 16 * 2**30))
"""Refuse artifacts that expand beyond this (16 GiB unless the server sets another cap)."""
DEFAULT_MAX_ENTRIES = 200_000
_BOMB_RATIO = 1000  # uncompressed/compressed above this, for a big artifact, is a zip bomb
_BOMB_MIN_BYTES = 256 * 2**20
_SKIP_DIRS = {"__MACOSX", "__pycache__"}
_TRACEBACK_FRAMES = 3


class ModelLoadError(Exception):
    """The model folder could not be turned into a ready inference."""


class UnsafeArtifactError(ModelLoadError):
    """The artifact zip is malformed, escapes its folder, or expands beyond the size cap."""


# -- unpacking ---------------------------------------------------------------------------
def unpack_artifact(
    zip_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> Path:
    """Extract ``zip_path`` into ``dest`` and return the model folder inside it.

    The model folder is ``dest`` itself when the zip has ``.py`` files at its
    top level, else the single top-level folder holding them (zips made by
    "compress folder" wrap everything in one directory). Raises
    :class:`UnsafeArtifactError` for entries with absolute paths, ``..``
    components or symlinks, and when the content would exceed ``max_bytes``.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArtifactError(f"artifact {zip_path.name!r} is not a readable zip file: {exc}") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise UnsafeArtifactError(
                f"artifact {zip_path.name!r} has {len(infos)} entries; at most {max_entries} are allowed"
            )
        declared = sum(i.file_size for i in infos)
        compressed = sum(i.compress_size for i in infos) or 1
        if declared > max_bytes:
            raise UnsafeArtifactError(
                f"artifact {zip_path.name!r} expands to {declared} bytes, over the {max_bytes}-byte cap"
            )
        if declared >= _BOMB_MIN_BYTES and declared / compressed > _BOMB_RATIO:
            raise UnsafeArtifactError(
                f"artifact {zip_path.name!r} expands {declared // compressed}x ({declared} bytes): "
                "refusing what looks like a zip bomb"
            )
        written = 0
        for info in infos:
            rel = _safe_member_path(info, zip_path.name)
            if rel is None:
                continue
            target = root.joinpath(*rel.parts)
            if not target.resolve().is_relative_to(root):
                raise UnsafeArtifactError(f"artifact entry {info.filename!r} resolves outside the model folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    entry_bytes = 0
                    while chunk := src.read(1 << 20):
                        entry_bytes += len(chunk)
                        written += len(chunk)
                        if written > max_bytes or entry_bytes > info.file_size:
                            raise UnsafeArtifactError(
                                f"artifact {zip_path.name!r} expands beyond its declared size or the "
                                f"{max_bytes}-byte cap (at entry {info.filename!r}); refusing it"
                            )
                        out.write(chunk)
            except UnsafeArtifactError:
                target.unlink(missing_ok=True)
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                target.unlink(missing_ok=True)
                raise UnsafeArtifactError(
                    f"artifact {zip_path.name!r} is corrupt at entry {info.filename!r}: {exc}"
                ) from exc
    return find_model_root(root)


def _safe_member_path(info: zipfile.ZipInfo, zip_name: str) -> PurePosixPath | None:
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise UnsafeArtifactError(f"artifact {zip_name!r} entry {info.filename!r} is a symlink; symlinks are not allowed")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArtifactError(f"artifact {zip_name!r} entry {info.filename!r} has an absolute path")
    path = PurePosixPath(name)
    if any(part == ".." for part in path.parts):
        raise UnsafeArtifactError(f"artifact {zip_name!r} entry {info.filename!r} contains '..'")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or parts[0] in _SKIP_DIRS or any(p == "__pycache__" for p in parts):
        return None
    return PurePosixPath(*parts)


def find_model_root(folder: str | os.PathLike[str]) -> Path:
    """The folder holding the model's ``.py`` files: ``folder`` or its single subfolder (a few levels down)."""
    root = Path(folder)
    for _ in range(4):
        entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name not in _SKIP_DIRS]
        if any(p.is_file() and p.suffix == ".py" for p in entries):
            return root
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) != 1:
            return root
        root = dirs[0]
    return root


# -- importing ---------------------------------------------------------------------------
def _user_traceback(exc: BaseException, model_dir: Path) -> str:
    """The last frames of ``exc``'s traceback that are in the model's own files."""
    base = str(model_dir.resolve())
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if os.path.abspath(f.filename).startswith(base + os.sep)
    ]
    lines: list[str] = []
    for frame in frames[-_TRACEBACK_FRAMES:]:
        rel = os.path.relpath(os.path.abspath(frame.filename), base)
        lines.append(f'  File "{rel}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    if isinstance(exc, SyntaxError) and exc.text:
        lines.append(f'  File "{os.path.basename(exc.filename or "?")}", line {exc.lineno}')
        lines.append(f"    {exc.text.strip()}")
    return "\n".join(lines)


def describe_exception(exc: BaseException, model_dir: Path | None = None) -> str:
    """``Type: message`` plus the traceback lines inside ``model_dir``."""
    head = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    tail = _user_traceback(exc, model_dir) if model_dir is not None else ""
    return f"{head}\n{tail}" if tail else head


def _module_file(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _module_name(path: Path) -> tuple[str, ModuleType | None]:
    """The name to import ``path`` under, and the module already imported from it if any.

    Its file name, unless a module of that name is loaded from elsewhere (a stdlib or runtime
    module, or another model folder loaded in this process): then a private name of its own.
    """
    private = f"_byop_{hashlib.sha1(str(path.parent).encode()).hexdigest()[:10]}_{path.stem}"
    for mod_name in (path.stem, private):
        existing = sys.modules.get(mod_name)
        if existing is None or _module_file(existing) == path.resolve():
            return mod_name, existing
    return private, None


def import_model_modules(model_dir: str | os.PathLike[str], name: str) -> list[ModuleType]:
    """Import every top-level ``.py`` file of ``model_dir`` (which goes on ``sys.path``).

    Modules keep their file names as module names, so the files can import each
    other (``from helpers import ...``) as they do on Wallaroo.
    """
    model_dir = Path(model_dir).resolve()
    if not model_dir.is_dir():
        raise ModelLoadError(f"model {name!r}: model folder {str(model_dir)!r} does not exist")
    files = sorted(
        p for p in model_dir.glob("*.py")
        if p.is_file() and p.name != "__init__.py" and not p.name.startswith(".")
    )
    if not files:
        raise ModelLoadError(
            f"model {name!r}: no Python files (*.py) at the top level of {model_dir}; expected the BYOP "
            "folder whose modules define a mac.inference.creation.InferenceBuilder subclass"
        )
    if str(model_dir) not in sys.path:
        sys.path.insert(0, str(model_dir))
    importlib.invalidate_caches()
    modules: list[ModuleType] = []
    for path in files:
        mod_name, existing = _module_name(path)
        if existing is not None:
            modules.append(existing)  # already imported (by a sibling module, or an earlier load)
            continue
        if mod_name != path.stem:
            log.warning("model %r: module name %r is taken; importing %s as a private module", name, path.stem, path.name)
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - .py files always get a loader
            raise ModelLoadError(f"model {name!r}: cannot import {path.name!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from user code is an import failure too
            sys.modules.pop(mod_name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ModelLoadError(
                f"model {name!r} failed to import module {path.name!r}: {describe_exception(exc, model_dir)}"
            ) from exc
        modules.append(module)
    return modules


def find_builder(modules: list[ModuleType], model_dir: str | os.PathLike[str], name: str) -> type[Any]:
    """The one concrete ``InferenceBuilder`` subclass defined in the model's files."""
    from mac.inference.creation import InferenceBuilder

    base = Path(model_dir).resolve()
    concrete: list[type[Any]] = []
    abstract: list[type[Any]] = []
    for module in modules:
        for obj in vars(module).values():
            if not (isinstance(obj, type) and issubclass(obj, InferenceBuilder)) or obj is InferenceBuilder:
                continue
            owner = sys.modules.get(obj.__module__)
            owner_file = _module_file(owner) if owner is not None else None
            if owner_file is None or not owner_file.is_relative_to(base):
                continue  # a base class imported from a library, not the model's own
            bucket = abstract if inspect.isabstract(obj) else concrete
            if obj not in bucket:
                bucket.append(obj)
    imported = ", ".join(f"{Path(m.__file__ or '?').name}" for m in modules)
    if not concrete:
        hint = ""
        if abstract:
            hint = "; " + "; ".join(
                f"{c.__name__} is abstract (missing: {', '.join(sorted(c.__abstractmethods__))})" for c in abstract
            )
        raise ModelLoadError(
            f"model {name!r}: no subclass of mac.inference.creation.InferenceBuilder found in {base} "
            f"(imported: {imported}); expected one concrete class that extends InferenceBuilder and "
            f"defines the `inference` property and `create(config)`{hint}"
        )
    if len(concrete) > 1:
        names = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in concrete)
        raise ModelLoadError(
            f"model {name!r}: found {len(concrete)} InferenceBuilder subclasses in {base} ({names}); "
            "expected exactly one"
        )
    return concrete[0]


def load_inference(model_dir: str | os.PathLike[str], name: str = "model") -> Any:
    """Import the model folder, run its builder and return the ready ``Inference``."""
    from mac.config.inference import CustomInferenceConfig
    from mac.inference import Inference
    from mac.inference.creation import resolve_inference

    folder = Path(model_dir).resolve()
    modules = import_model_modules(folder, name)
    builder_cls = find_builder(modules, folder, name)
    try:
        builder = builder_cls()
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"model {name!r}: {builder_cls.__name__}() failed: {describe_exception(exc, folder)}"
        ) from exc
    config = CustomInferenceConfig(framework="custom", model_path=folder)
    try:
        inference = resolve_inference(builder, config)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"model {name!r}: {builder_cls.__name__}.create() failed: {describe_exception(exc, folder)}"
        ) from exc
    if not isinstance(inference, Inference):  # pragma: no cover - resolve_inference checks
        raise ModelLoadError(f"model {name!r}: the builder did not produce a mac.inference.Inference")
    if inference.model is None:
        raise ModelLoadError(
            f"model {name!r}: {builder_cls.__name__}.create() returned a {type(inference).__name__} whose "
            "model is not assigned; create() must set `inference.model = ...`"
        )
    return inference

