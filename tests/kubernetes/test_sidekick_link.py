"""The sidekick link without a cluster (D35): a real `sidekick.serve` process, as a pod runs it, and
`RemoteSidekick`, as the runtime reaches it. Token and model checks, the model's own load error,
streamed answers relayed frame by frame, an abandoned stream, and a server that exits with its
worker so Kubernetes replaces the pod."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.sidekick import link, protocol
from wallaroo_pulumi.runtime.sidekick.errors import SidekickCrashedError, SidekickLoadError, SidekickPredictError
from wallaroo_pulumi.runtime.sidekick.remote import LinkDenied, ModelBundle, RemoteSidekick
from wallaroo_pulumi.runtime.sidekick.serve import TOKEN_ENV
from wallaroo_pulumi.testing.byop import byop_source

TOKEN = "link-token-for-tests"
STREAMING = '''

def _stream(self, input_data):
    for i, x in enumerate(input_data["x"]):
        yield {"row": np.array([i]), "half": np.array([x / 2.0])}
    return {"y": input_data["x"] * 2.0, "pid": np.array([os.getpid()] * len(input_data["x"]))}


TestInference.predict_stream = _stream
'''
MODEL = ('if (input_data["x"] < 0).any():\n    raise ValueError("negative input")\n'
         'return {"y": input_data["x"] * 2.0, "pid": np.array([os.getpid()] * len(input_data["x"]))}')


def bundle(tmp_path: Path, source: str, name: str = "m") -> ModelBundle:
    artifact = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(artifact, "w") as zf:
        zf.writestr("model.py", source)
    return ModelBundle(hashlib.sha256(artifact.read_bytes()).hexdigest(), artifact)


class Server:
    def __init__(self, tmp_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wallaroo_pulumi.runtime.sidekick.serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--name", "m", "--workdir", str(tmp_path / "pod")],
            env={**os.environ, TOKEN_ENV: TOKEN}, stderr=subprocess.DEVNULL)

    def remote(self, b: ModelBundle, token: str = TOKEN, **kw: float) -> RemoteSidekick:
        return RemoteSidekick("pod-0", "m", "127.0.0.1", self.port, token, b, **kw)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.proc.kill()
    srv.proc.wait(10)


def x(*values: float) -> pa.Table:
    return pa.table({"x": list(values)})


def test_only_the_token_holder_for_the_pods_model_is_served(server: Server, tmp_path: Path) -> None:
    model = bundle(tmp_path, byop_source(MODEL))

    async def scenario() -> None:
        with pytest.raises(LinkDenied, match="wrong or missing link token"):
            await server.remote(model, token="not-the-token").start()
        remote = server.remote(model)
        await remote.start()  # sends the model: the first client holding the token
        assert (await remote.predict(x(1.0, 2.5))).column("y").to_pylist() == [2.0, 5.0]
        with pytest.raises(SidekickPredictError, match="negative input"):
            await remote.predict(x(-1.0))
        other = bundle(tmp_path, byop_source('return {"y": input_data["x"]}'), "other")
        with pytest.raises(LinkDenied, match="serves model"):
            await server.remote(other).start()
        again = server.remote(model)  # a second runtime replica: the model is loaded already
        await again.start()
        assert (await again.predict(x(4.0))).column("y").to_pylist() == [8.0]
        await remote.stop()
        await again.stop()

    asyncio.run(scenario())


def test_a_model_that_cannot_load_says_why(server: Server, tmp_path: Path) -> None:
    broken = bundle(tmp_path, byop_source("return {}", load_body='raise RuntimeError("no weights here")'))

    async def scenario() -> None:
        remote = server.remote(broken)
        with pytest.raises(SidekickLoadError, match="no weights here"):
            await remote.start()
        assert remote.load_failed

    asyncio.run(scenario())


def test_a_pod_installs_requirements_with_option_lines_from_the_models_folder(server: Server, tmp_path: Path) -> None:
    """`--find-links wheels` (a folder of the model's) and `--no-index`, as a local deploy and a publish
    take them: a pod with no route out installs what its model carries."""
    from tests.runtime.conftest import tiny_wheel

    artifact = tmp_path / "needs.zip"
    with zipfile.ZipFile(artifact, "w") as zf:
        zf.writestr("model.py", "import linktinydep\n" + byop_source('return {"y": input_data["x"] + linktinydep.OFFSET}'))
        zf.writestr("requirements.txt", "--no-index\n--find-links wheels\nlinktinydep==1.0\n")
        zf.writestr("wheels/linktinydep-1.0-py3-none-any.whl", tiny_wheel("linktinydep", "1.0", "OFFSET = 7.0\n"))
    model = ModelBundle(hashlib.sha256(artifact.read_bytes()).hexdigest(), artifact)

    async def scenario() -> None:
        remote = server.remote(model)
        await remote.start()
        assert (await remote.predict(x(1.0))).column("y").to_pylist() == [8.0]
        await remote.stop()

    asyncio.run(scenario())


def test_streamed_answers_cross_the_link_frame_by_frame(server: Server, tmp_path: Path) -> None:
    model = bundle(tmp_path, byop_source(MODEL) + STREAMING)

    async def scenario() -> None:
        remote = server.remote(model)
        await remote.start()
        parts = [part async for part in remote.predict_stream(x(1.0, 3.0))]
        assert [p.final for p in parts] == [False, False, True]
        assert [p.table.column("half").to_pylist() for p in parts[:2]] == [[0.5], [1.5]]
        assert parts[-1].table.column("y").to_pylist() == [2.0, 6.0]
        # a consumer that leaves after the first chunk: the server reads the rest, the next request is answered
        stream = remote.predict_stream(x(5.0, 6.0, 7.0))
        first = await anext(stream)
        assert first.table.column("half").to_pylist() == [2.5]
        await stream.aclose()
        assert (await remote.predict(x(1.0))).column("y").to_pylist() == [2.0]
        await remote.stop()

    asyncio.run(scenario())


def test_frames_cross_the_link_with_their_request_ids(server: Server, tmp_path: Path) -> None:
    """D61: the server relays each frame with its request id; an answer carries its request's id."""
    model = bundle(tmp_path, byop_source(MODEL))

    async def scenario() -> None:
        remote = server.remote(model)
        await remote.start()  # the pod loads the model
        await remote.stop()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        link.write(writer, link.HELLO, protocol.json_payload(token=TOKEN, sha=model.sha, name="m"))
        await writer.drain()
        assert (await link.read(reader)).ftype == protocol.READY
        for rid, value in ((77, 1.0), (2**32 - 1, -1.0), (5, 3.0)):
            link.write(writer, protocol.REQUEST, protocol.table_to_ipc(x(value)), rid)
            await writer.drain()
            frame = await link.read(reader)
            assert frame.rid == rid
            if value < 0:
                assert frame.ftype == protocol.ERROR and b"negative input" in frame.payload
            else:
                assert protocol.ipc_to_table(frame.payload).column("y").to_pylist() == [value * 2]
        writer.close()
        remote = server.remote(model)  # and the client's own ids still line up after that
        await remote.start()
        assert (await remote.predict(x(4.0))).column("y").to_pylist() == [8.0]
        await remote.stop()

    asyncio.run(scenario())


def test_the_server_exits_with_its_worker_and_the_client_sees_a_crash(server: Server, tmp_path: Path) -> None:
    model = bundle(tmp_path, byop_source(MODEL))

    async def scenario() -> None:
        remote = server.remote(model, request_timeout_s=30)
        await remote.start()
        pid = (await remote.predict(x(1.0))).column("pid")[0].as_py()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while server.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert server.proc.returncode == 1  # so the kubelet restarts the container, or the pod is replaced
        with pytest.raises(SidekickCrashedError):
            await remote.predict(x(1.0))
        assert remote.state == "failed"
        await remote.stop()

    asyncio.run(scenario())
