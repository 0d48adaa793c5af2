"""The sidekick server: a model step's pod (D35).

Run as ``python -m wallaroo_pulumi.runtime.sidekick.serve --port 9000 --name STEP
[--host IP] [--env-names A,B] [--workdir DIR]`` with the step's env and its link token in
``WALLAROO_SIDEKICK_TOKEN``. The first client holding the token sends the model (:mod:`.link`);
the server unpacks it, installs its requirements, starts one worker (:mod:`.worker`) with the
model's env only, and relays frames between it and every client, as many requests at once as
they send (each client's ids mapped to the server's own, D61; the worker answers K at once). When
the worker dies the server exits with it, so Kubernetes restarts or replaces the pod."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from wallaroo_pulumi.runtime.sidekick import link, protocol

TOKEN_ENV = "WALLAROO_SIDEKICK_TOKEN"
_MAX_ID = 2**32 - 1
log = logging.getLogger("wallaroo.sidekick.serve")


class SidekickServer:
    def __init__(self, name: str, token: str, env: dict[str, str], workdir: Path, scratch_size: str | None = None,
                 concurrency: int | None = None) -> None:
        self.name = name
        self.concurrency = concurrency  # the step's model_concurrency (None: the model's own)
        self.scratch_size = scratch_size  # the pod's scratch emptyDir's sizeLimit, named when a write finds it full
        self._token = token
        self._env = env
        self.workdir = workdir
        self._sha: str | None = None
        self._answer: tuple[bytes, bytes] | None = None  # READY or LOAD_ERROR, for every later client
        self._load_lock = asyncio.Lock()
        #: requests in flight at the worker, by the server's id: the client's writer and its own id
        self._routes: dict[int, tuple[asyncio.StreamWriter, int]] = {}
        self._last_id = 0
        self._relay: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.exited = asyncio.Event()

    # -- a client ---------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_client(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError, ValueError) as exc:
            log.info("client %s left: %s", writer.get_extra_info("peername"), type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ftype, _, payload = await link.read(reader)
        hello = json.loads(payload) if ftype == link.HELLO else {}
        if not hmac.compare_digest(str(hello.get("token", "")).encode(), self._token.encode()):
            await self._deny(writer, "wrong or missing link token")
            return
        sha = str(hello.get("sha", ""))
        async with self._load_lock:
            if self._sha is None:
                link.write(writer, link.NEED_MODEL)
                await writer.drain()
                ftype, length = await link.read_header(reader)
                if ftype != link.MODEL:
                    raise protocol.ProtocolError(f"expected the model, got frame {ftype!r}")
                self.workdir.mkdir(parents=True, exist_ok=True)
                header = await link.receive_model(reader, length, self.workdir / "model.zip")
                self._sha = sha
                self._answer = await self._load(header)
            elif sha != self._sha:
                await self._deny(writer, f"this pod serves model {self._sha[:12]}, not {sha[:12]}")
                return
        assert self._answer is not None
        link.write(writer, *self._answer)
        await writer.drain()
        if self._answer[0] != protocol.READY:
            return
        await self._relay_requests(reader, writer)

    async def _deny(self, writer: asyncio.StreamWriter, message: str) -> None:
        log.warning("client %s denied: %s", writer.get_extra_info("peername"), message)
        link.write(writer, link.DENIED, protocol.json_payload(message=message))
        await writer.drain()

    async def _relay_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The client's frames to the worker as they come, each under an id of the server's own, so
        that the ids of several clients (runtime replicas) never collide at the worker; the answers
        go back by `_relay_answers`. A client that leaves has the answers to its requests dropped."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            while True:
                frame = await link.read(reader)
                if frame.ftype == protocol.SHUTDOWN:
                    return
                self._last_id = self._last_id % _MAX_ID + 1
                while self._last_id in self._routes:  # still answering a request of 2**32 ago
                    self._last_id = self._last_id % _MAX_ID + 1
                self._routes[self._last_id] = (writer, frame.rid)
                try:
                    link.write(proc.stdin, frame.ftype, frame.payload, self._last_id)  # type: ignore[arg-type]
                    await proc.stdin.drain()
                except (ConnectionError, BrokenPipeError):
                    await self._worker_gone(proc)
                    raise ConnectionError("the worker exited during a request") from None
        finally:
            for sid in [sid for sid, (client, _) in self._routes.items() if client is writer]:
                del self._routes[sid]

    async def _relay_answers(self, proc: asyncio.subprocess.Process) -> None:
        """Every frame of the worker to the client whose request it answers, under that client's id.
        When the worker's frames end, every client with a request in flight is cut off at once (it
        sees the crash) and the server exits."""
        assert proc.stdout is not None
        routes = self._routes
        try:
            while True:
                frame = await link.read(proc.stdout)
                route = routes.pop(frame.rid, None) if frame.ftype in link.TERMINAL else routes.get(frame.rid)
                if route is None or route[0].is_closing():
                    continue  # its client left
                link.write(route[0], frame.ftype, frame.payload, route[1])
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await route[0].drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            for client in {client for client, _ in routes.values()}:
                client.close()
            routes.clear()
            await self._worker_gone(proc)

    # -- the model ----------------------------------------------------------------------
    async def _load(self, header: dict) -> tuple[bytes, bytes]:
        try:
            model_dir, extra = await asyncio.to_thread(self._prepare, header)
        except Exception as exc:  # noqa: BLE001 - the client gets it as the model's load error
            log.warning("model %r: %s", self.name, exc)
            return protocol.LOAD_ERROR, protocol.json_payload(type=type(exc).__name__,
                                                              message=f"model {self.name!r}: {exc}")
        from wallaroo_pulumi.runtime.sidekick.placement import LocalPlacement, Reservation, available_cpus, visible_gpus
        from wallaroo_pulumi.runtime.sidekick.spec import SidekickSpec

        cpus = available_cpus()
        spec = SidekickSpec(step_name=self.name, model_version=self._sha or "?", model_dir=model_dir, env=self._env,
                            cpus=len(cpus), extra_pythonpath=extra, scratch_size=self.scratch_size,
                            concurrency=self.concurrency)
        launch = LocalPlacement().launch(spec, Reservation(cpu_ids=tuple(cpus), gpu_ids=tuple(visible_gpus())))
        proc = self._proc = await asyncio.create_subprocess_exec(
            *launch.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=launch.env, cwd=launch.cwd, start_new_session=True)
        assert proc.stdout is not None
        try:
            ftype, _, payload = await link.read(proc.stdout)
        except asyncio.IncompleteReadError:
            code = await proc.wait()
            return protocol.LOAD_ERROR, protocol.json_payload(
                type="WorkerExited", message=f"the worker of model {self.name!r} exited with {code} before it was ready")
        if ftype == protocol.READY:
            log.info("model %r ready in worker pid %d", self.name, proc.pid)
            asyncio.get_running_loop().create_task(self._watch(proc))
            self._relay = asyncio.get_running_loop().create_task(self._relay_answers(proc))
        return ftype, payload

    def _prepare(self, header: dict) -> tuple[Path, list[Path]]:
        """Unpack the artifact received and pip-install its requirements into this pod's work folder."""
        from wallaroo_pulumi.runtime.sidekick.loader import unpack_artifact
        from wallaroo_pulumi.runtime.sidekick.requirements import pip_env, read_requirements

        zip_path = self.workdir / "model.zip"
        target = self.workdir / "model"
        shutil.rmtree(target, ignore_errors=True)
        model_dir = Path(unpack_artifact(zip_path, target))
        zip_path.unlink()
        lines = read_requirements(model_dir, list(header.get("requirements") or []))
        if not lines:
            return model_dir, []
        deps = self.workdir / "deps"
        # a requirements file, run in the model's folder: option lines (`--find-links wheels`) work as at a local deploy
        listed = self.workdir / "requirements.txt"
        listed.write_text("\n".join(lines) + "\n")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--target", str(deps), "-r", str(listed)],
                              cwd=model_dir, env=pip_env(self.workdir), capture_output=True, text=True, timeout=900,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"installing its requirements failed: {done.stderr.strip()[-2000:]}")
        return model_dir, [deps]

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        await self._worker_gone(proc)

    async def _worker_gone(self, proc: asyncio.subprocess.Process) -> None:
        if not self.stopping and not self.exited.is_set():
            code = await proc.wait()
            log.error("the worker of model %r exited with %s: the server exits too", self.name, code)
            self.exited.set()

    async def stop(self) -> None:
        self.stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _concurrency(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 256, got {value!r}")
    return int(value)


async def run(host: str, port: int, server: SidekickServer) -> int:
    listener = await asyncio.start_server(server.handle, host, port)
    log.info("sidekick %r listening on %s:%d", server.name, host, port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    done, _ = await asyncio.wait({asyncio.create_task(stop.wait()), asyncio.create_task(server.exited.wait())},
                                 return_when=asyncio.FIRST_COMPLETED)
    listener.close()
    crashed = server.exited.is_set()
    await server.stop()
    return 1 if crashed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wallaroo_pulumi.runtime.sidekick.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True, help="the model step's name")
    parser.add_argument("--env-names", default="", help="comma-separated names of the model's env (from our env)")
    parser.add_argument("--workdir", default=None, help="where the model is unpacked (default: $TMPDIR/sidekick)")
    parser.add_argument("--scratch-size", default=None, help="the step's scratch_size (its scratch volume's sizeLimit)")
    parser.add_argument("--concurrency", type=_concurrency, default=None,
                        help="the step's model_concurrency: batches the worker answers at once (default: the model's own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("WALLAROO_SIDEKICK_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        parser.error(f"{TOKEN_ENV} is not set: the link token comes from the step's Secret")
    names = [n for n in args.env_names.split(",") if n]
    missing = [n for n in names if n not in os.environ]
    if missing:
        parser.error(f"--env-names: not in the environment: {', '.join(missing)}")
    workdir = Path(args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "sidekick")
    server = SidekickServer(args.name, token, {n: os.environ[n] for n in names}, workdir, args.scratch_size,
                            args.concurrency)
    return asyncio.run(run(args.host, args.port, server))


if __name__ == "__main__":
    sys.exit(main())
