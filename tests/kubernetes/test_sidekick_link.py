"""The sidekick link without a cluster (D35): a real `sidekick.serve` process, as a pod runs it, and
`RemoteSidekick`, as the runtime reaches it. Token and model checks, the model's own load error,
streamed answers relayed frame by frame, an abandoned stream, and a server that exits with its
worker so Kubernetes replaces the pod. With a worker that answers K batches at once (D61), K
batches cross one link at once, and the ids of two clients of one pod never collide."""

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

from wallaroo_pulumi.runtime.kube.pool import queue_depth
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
# Each batch sleeps its first `x` seconds; declared thread-safe for 4 at once where SLEEPY_K4 says so.
SLEEPY = ('import time\ntime.sleep(float(input_data["x"][0]))\n'
          'return {"y": input_data["x"] * 2.0, "pid": np.array([os.getpid()] * len(input_data["x"]))}')
K4 = "\n\nTestInference.predict_concurrency = 4\n"
MODEL = ('if (input_data["x"] < 0).any():\n    raise ValueError("negative input")\n'
         'return {"y": input_data["x"] * 2.0, "pid": np.array([os.getpid()] * len(input_data["x"]))}')


def bundle(tmp_path: Path, source: str, name: str = "m") -> ModelBundle:
    artifact = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(artifact, "w") as zf:
        zf.writestr("model.py", source)
    return ModelBundle(hashlib.sha256(artifact.read_bytes()).hexdigest(), artifact)


class Server:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wallaroo_pulumi.runtime.sidekick.serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--name", "m", "--workdir", str(tmp_path / "pod"), *args],
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


async def timed(remote: RemoteSidekick, values: list[float]) -> tuple[float, list[float]]:
    """Each value as its own batch, all at once: the time they took, and each answer's y."""
    start = time.monotonic()
    out = await asyncio.gather(*(remote.predict(x(v)) for v in values))
    return time.monotonic() - start, [t.column("y")[0].as_py() for t in out]


def test_k_slow_batches_cross_one_link_in_about_one_latency(server: Server, tmp_path: Path) -> None:
    """The pod's READY says K = 4: four batches of 0.5 s are in flight at once over the one link."""
    model = bundle(tmp_path, byop_source(SLEEPY) + K4)

    async def scenario() -> None:
        remote = server.remote(model, max_batch_rows=1)  # no merging: four batches, not one
        await remote.start()
        assert remote.concurrency == 4
        assert queue_depth(8, [remote]) == 2.0  # D46: per slot, so scale_up_queue_depth keeps its meaning
        link_id = remote.link_id
        took, ys = await timed(remote, [0.5, 0.51, 0.52, 0.53])
        assert ys == [1.0, 1.02, 1.04, 1.06]  # each answer found its own caller
        assert took < 1.5, f"4 batches of 0.5 s over a link of K = 4 took {took:.2f} s (one at a time: 2 s)"
        # a caller that gives up leaves the link and the batches beside it alone
        slow = asyncio.ensure_future(remote.predict(x(0.6)))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(remote.predict(x(1.0)), 0.2)
        assert (await slow).column("y").to_pylist() == [1.2]
        assert (await remote.predict(x(0.0))).column("y").to_pylist() == [0.0]
        assert remote.link_id == link_id and remote.state == "ready"
        await remote.stop()

    asyncio.run(scenario())


def test_a_model_that_declares_nothing_is_answered_one_batch_at_a_time(server: Server, tmp_path: Path) -> None:
    model = bundle(tmp_path, byop_source(SLEEPY))

    async def scenario() -> None:
        remote = server.remote(model, max_batch_rows=1)
        await remote.start()
        assert remote.concurrency == 1
        took, ys = await timed(remote, [0.3, 0.31, 0.32, 0.33])
        assert ys == [0.6, 0.62, 0.64, 0.66]
        assert took >= 1.2, f"4 batches of 0.3 s on one slot took only {took:.2f} s"
        await remote.stop()

    asyncio.run(scenario())


def test_two_clients_of_one_pod_number_their_requests_alike_without_collision(server: Server, tmp_path: Path) -> None:
    """Two runtime replicas linked to one pod both number their requests from 1: the server maps
    them to ids of its own, so each answer reaches the client and request that asked."""
    model = bundle(tmp_path, byop_source(SLEEPY) + K4)

    async def scenario() -> None:
        first, second = (server.remote(model, max_batch_rows=1, request_timeout_s=10) for _ in range(2))
        await first.start()
        await second.start()
        start = time.monotonic()
        (_, ys1), (_, ys2) = await asyncio.gather(timed(first, [0.5, 0.2]), timed(second, [0.2, 0.5]))
        took = time.monotonic() - start
        assert (ys1, ys2) == ([1.0, 0.4], [0.4, 1.0])
        assert took < 1.2, f"2 + 2 batches (0.5 s at most) from two clients on K = 4 took {took:.2f} s"
        await first.stop()  # the other client's link goes on
        assert (await second.predict(x(0.1))).column("y").to_pylist() == [0.2]
        await second.stop()

    asyncio.run(scenario())


def test_requests_pass_a_stream_in_flight_on_the_other_slots(server: Server, tmp_path: Path) -> None:
    model = bundle(tmp_path, byop_source(SLEEPY + "\n") + STREAMING + K4)

    async def scenario() -> None:
        remote = server.remote(model, max_batch_rows=1)
        await remote.start()
        stream = remote.predict_stream(x(5.0, 6.0))
        first = await anext(stream)
        assert first.table.column("half").to_pylist() == [2.5]
        beside = await asyncio.wait_for(remote.predict(x(0.1)), 10)  # one slot would wait for the stream forever
        assert beside.column("y").to_pylist() == [0.2]
        rest = [part async for part in stream]
        assert [p.final for p in rest] == [False, True] and rest[-1].table.column("y").to_pylist() == [10.0, 12.0]
        await remote.stop()

    asyncio.run(scenario())


def test_a_worker_crash_fails_every_batch_in_flight_on_the_link(server: Server, tmp_path: Path) -> None:
    model = bundle(tmp_path, byop_source(SLEEPY) + K4)

    async def scenario() -> None:
        remote = server.remote(model, max_batch_rows=1, request_timeout_s=30)
        await remote.start()
        pid = (await remote.predict(x(0.0))).column("pid")[0].as_py()
        in_flight = [asyncio.ensure_future(remote.predict(x(5.0 + i))) for i in range(3)]
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        out = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(isinstance(e, SidekickCrashedError) for e in out), out
        assert time.monotonic() - start < 5, "the batches in flight waited for their own timeouts"
        assert remote.state == "failed"
        await remote.stop()

    asyncio.run(scenario())


def test_the_steps_model_concurrency_overrides_the_models_in_its_pod(tmp_path: Path) -> None:
    """`--concurrency`, the step's `model_concurrency` as the pod's Deployment passes it, caps the
    model's declared 4 at 2: four batches of 0.5 s take two rounds."""
    model = bundle(tmp_path, byop_source(SLEEPY) + K4)
    capped = Server(tmp_path, "--concurrency", "2")

    async def scenario() -> None:
        remote = capped.remote(model, max_batch_rows=1)
        await remote.start()
        assert remote.concurrency == 2
        took, ys = await timed(remote, [0.5, 0.5, 0.5, 0.5])
        assert ys == [1.0] * 4
        assert 0.95 <= took < 1.8, f"4 batches of 0.5 s on 2 slots took {took:.2f} s (1 slot: 2 s, 4: 0.5 s)"
        await remote.stop()

    try:
        asyncio.run(scenario())
    finally:
        capped.proc.kill()
        capped.proc.wait(10)


@pytest.mark.parametrize("bad", ["0", "257", "two"])
def test_a_bad_concurrency_is_refused_naming_it(tmp_path: Path, bad: str) -> None:
    done = subprocess.run([sys.executable, "-m", "wallaroo_pulumi.runtime.sidekick.serve", "--port", "1", "--name", "m",
                           "--concurrency", bad], env={**os.environ, TOKEN_ENV: TOKEN}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "--concurrency: expected an integer from 1 to 256" in done.stderr, done.stderr
