"""Where a listener model runs: its own sidekick process (default), in-process, or its scorer called directly.

A listener model is a BYOP folder (built-in under ``components/byop/listeners/``, or an uploaded model
version): it gets an Arrow table with one string column ``text`` and returns the score columns.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick import Placement, SidekickPool, SidekickSpec
from wallaroo_pulumi.runtime.sidekick.loader import load_inference
from wallaroo_pulumi.scorers.registry import BUILTINS, get_scorer, listener_scorer

from .errors import ListenerError


def _builtin_dir() -> Path:
    """components/byop/listeners: the repo's top-level components/ installs as wallaroo_pulumi.components
    (a wheel puts it inside the package, an editable install maps it to the repo)."""
    spec = importlib.util.find_spec("wallaroo_pulumi.components")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        d = Path(loc) / "byop" / "listeners"
        if d.is_dir():
            return d.resolve()
    return Path(__file__).resolve().parents[4] / "components" / "byop" / "listeners"


BUILTIN_DIR = _builtin_dir()
BYOP_BASE = Path(__file__).resolve().parents[3] / "scorers" / "byop.py"  # the built-ins' shared code


class ListenerModelError(ListenerError):
    """The listener model could not be found, loaded or run; the message says which and why."""


@dataclass
class ListenerModelRef:
    name: str
    version: str
    model_dir: Path
    sha: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory: str | None = None
    gpus: int | None = None
    scorer: str | None = None  # set for built-ins: the wallaroo_pulumi.scorers name
    extra_pythonpath: list[Path] = field(default_factory=list)

    @property
    def cache_key(self) -> tuple[Any, ...]:
        return (str(self.model_dir), self.version, tuple(sorted(self.env.items())))


#: (workspace_id, name, version or None) -> ListenerModelRef (or an awaitable of one);
#: raise LookupError when unknown.
Resolver = Callable[[int, str, "str | None"], Any]


def _dir_sha(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*.py")):
        h.update(p.relative_to(d).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def builtin_resolver(workspace_id: int, name: str, version: str | None) -> ListenerModelRef:
    """The listeners shipped with wallaroo-pulumi, by name (``toxicity`` or ``toxicity-listener``)."""
    short = name[: -len("-listener")] if name.endswith("-listener") else name
    if short not in BUILTINS:
        raise LookupError(name)
    d = BUILTIN_DIR / short
    if not (d / "model.py").is_file():
        raise ListenerModelError(f"built-in listener {short!r} is missing its code at {d}")
    # the folder's model.py is a few lines on top of wallaroo_pulumi.scorers.byop: version both
    shared = hashlib.sha256(BYOP_BASE.read_bytes()).hexdigest() if BYOP_BASE.is_file() else ""
    sha = hashlib.sha256((_dir_sha(d) + shared).encode()).hexdigest()
    return ListenerModelRef(
        name=name, version=version or f"builtin-{sha[:12]}", model_dir=d, sha=sha,
        scorer=listener_scorer(short),
    )


def chain_resolvers(*resolvers: Resolver | None) -> Resolver:
    rs = [r for r in resolvers if r is not None]

    async def resolve(workspace_id: int, name: str, version: str | None) -> ListenerModelRef:
        for r in rs:
            try:
                res = r(workspace_id, name, version)
                if inspect.isawaitable(res):
                    res = await res
                return res
            except LookupError:
                continue
        raise ListenerModelError(
            f"listener_model: no model named {name!r}"
            + (f" with version {version!r}" if version else "")
            + f" in workspace {workspace_id}; upload it first, or use a built-in listener: {list(BUILTINS)}"
        )

    return resolve


class Executor(Protocol):
    async def start(self) -> None: ...
    async def predict(self, table: pa.Table) -> pa.Table: ...
    async def stop(self) -> None: ...


class SidekickExecutor:
    """The listener model in its own sidekick process (``runtime.sidekick.SidekickPool``), placed with
    the pipelines' workers by the engine's ``placement``."""

    def __init__(self, ref: ListenerModelRef, placement: Placement, replicas: int = 1) -> None:
        env = {**ref.env, "LISTENER_TEXT_FIELD": "text"}
        kwargs: dict[str, Any] = dict(
            step_name=f"listener-{ref.name}", model_version=ref.version, model_dir=ref.model_dir, env=env
        )
        for k in ("cpus", "memory", "gpus"):
            if getattr(ref, k) is not None:
                kwargs[k] = getattr(ref, k)
        if ref.extra_pythonpath:
            kwargs["extra_pythonpath"] = list(ref.extra_pythonpath)
        self.pool = SidekickPool(SidekickSpec(**kwargs), replicas, None, placement)

    async def start(self) -> None:
        await self.pool.start()

    async def predict(self, table: pa.Table) -> pa.Table:
        return await self.pool.predict(table)

    async def stop(self) -> None:
        await self.pool.stop()


class InProcessExecutor:
    """Runs the BYOP folder's builder/inference in this process, in a worker thread.

    For tests and for hosts where subprocess sidekicks are not wanted; a listener that crashes
    here takes the runtime with it, which is why sidekicks are the default.
    """

    def __init__(self, ref: ListenerModelRef) -> None:
        self.ref = ref
        self._inference: Any = None

    async def start(self) -> None:
        self._inference = await asyncio.to_thread(load_inference, self.ref.model_dir, self.ref.name)

    async def predict(self, table: pa.Table) -> pa.Table:
        return await asyncio.to_thread(predict_byop, self._inference, table, self.ref.env)

    async def stop(self) -> None:
        self._inference = None


def predict_byop(inference: Any, table: pa.Table, env: dict[str, str] | None = None) -> pa.Table:
    data = {name: np.asarray(table.column(name).to_pylist(), dtype=object) for name in table.column_names}
    old = os.environ.get("LISTENER_TEXT_FIELD")
    os.environ["LISTENER_TEXT_FIELD"] = "text"
    try:
        out = inference.predict(data)
    finally:
        if old is None:
            os.environ.pop("LISTENER_TEXT_FIELD", None)
        else:
            os.environ["LISTENER_TEXT_FIELD"] = old
    return pa.table({k: pa.array(np.asarray(v).tolist()) for k, v in out.items()})


class ScorerExecutor:
    """A built-in listener's scorer called directly (no BYOP layer): the fastest path, used by
    benchmarks to separate scoring cost from process/IPC cost."""

    def __init__(self, ref: ListenerModelRef) -> None:
        if not ref.scorer:
            raise ListenerModelError(f"{ref.name!r} is not a built-in listener")
        self.scorer = get_scorer(ref.scorer)

    async def start(self) -> None:
        await asyncio.to_thread(self.scorer, ["warm up"])

    async def predict(self, table: pa.Table) -> pa.Table:
        texts = table.column("text").to_pylist()
        scores = await asyncio.to_thread(self.scorer, texts)
        return pa.table({k: pa.array(v, pa.float64()) for k, v in scores.items()})

    async def stop(self) -> None:
        pass


def make_executor(ref: ListenerModelRef, mode: str, placement: Placement) -> Executor:
    """mode: ``sidekick`` (``auto``: the default) | ``inprocess`` | ``scorer``."""
    if mode in ("sidekick", "auto"):
        return SidekickExecutor(ref, placement)
    if mode == "inprocess":
        return InProcessExecutor(ref)
    if mode == "scorer":
        return ScorerExecutor(ref)
    raise ValueError(f"executor: expected sidekick | inprocess | scorer | auto, got {mode!r}")
