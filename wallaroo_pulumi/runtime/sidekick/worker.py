"""The sidekick worker: one BYOP model in its own process.

Run as ``python -m wallaroo_pulumi.runtime.sidekick.worker --model-dir DIR --name NAME
[--cpu-affinity 0,1] [--env-names A,B]``: pin CPUs, load the model, READY (or LOAD_ERROR and
exit 3), then answer REQUEST frames (:mod:`.protocol`) until SHUTDOWN or EOF, up to
``--concurrency`` (or the model's `predict_concurrency`) at once.
"""

from __future__ import annotations

import argparse
import errno
import io
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

LOAD_ERROR_EXIT = 3
_SCRATCH_SIZE = ""  # the step's scratch_size, for the message of a write that found it full
log = logging.getLogger("wallaroo.sidekick.worker")


def _pin_cpus(cpu_affinity: list[int] | None) -> None:
    """Pin CPUs before heavy imports, so the model and its thread pools inherit them.

    Memory is not limited here: the supervisor caps resident memory from outside
    (see :mod:`wallaroo_pulumi.runtime.sidekick.memory`).
    """
    if cpu_affinity and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cpu_affinity)
        except OSError as exc:
            log.warning("could not pin to CPUs %s: %s", cpu_affinity, exc)


def _take_protocol_fds() -> tuple[BinaryIO, BinaryIO]:
    """Private copies of stdin/stdout for frames; fd 0 -> /dev/null, fd 1 -> stderr.

    Done before any user code runs, so a model's ``print()`` (or a C library writing to fd 1)
    can never corrupt a frame; the supervisor forwards stderr line by line.
    """
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), encoding="utf-8", errors="replace",
                                  line_buffering=True, write_through=True)
    return io.BufferedReader(proto_in, buffer_size=1 << 16), proto_out  # type: ignore[arg-type]


def _error_payload(exc: BaseException, redact: Any, model_dir: Any = None) -> bytes:
    """An ERROR/LOAD_ERROR body: the exception type and its quoted, redacted description."""
    from wallaroo_pulumi.runtime.sidekick import protocol
    from wallaroo_pulumi.runtime.sidekick.loader import describe_exception

    if isinstance(exc, MemoryError):
        # Formatting a traceback may itself fail when memory is exhausted.
        text = "MemoryError: the model ran out of memory"
    else:
        text = describe_exception(exc, model_dir)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            text += (f"; its scratch folder is full (its scratch_size is {_SCRATCH_SIZE or 'unset'}): "
                     "raise the step's sidekick scratch_size, or write less")
    return protocol.json_payload(type=type(exc).__name__, message=redact(text))


def serve(model_dir: str, name: str, proto_in: BinaryIO, proto_out: BinaryIO, redact: Any,
          concurrency: int | None = None) -> int:
    """Load the model, then answer requests until SHUTDOWN/EOF. Returns the exit code."""
    from pathlib import Path

    from wallaroo_pulumi.runtime.sidekick import protocol
    from wallaroo_pulumi.runtime.sidekick.loader import ModelLoadError, load_inference

    folder = Path(model_dir).resolve()
    try:
        protocol.warm_up()
        inference = load_inference(folder, name)
        concurrency = concurrency or declared_concurrency(inference)
    except ModelLoadError as exc:
        protocol.write_frame(proto_out, protocol.LOAD_ERROR, protocol.json_payload(
            type=type(exc.__cause__ or exc).__name__, message=redact(str(exc))))
        return LOAD_ERROR_EXIT
    except BaseException as exc:  # noqa: BLE001 - anything else during load is a load error too
        body = protocol.parse_json_payload(_error_payload(exc, redact, folder))
        protocol.write_frame(proto_out, protocol.LOAD_ERROR, protocol.json_payload(
            type=body.get("type"), message=f"model {name!r} failed to load: {body.get('message')}"))
        return LOAD_ERROR_EXIT
    protocol.write_frame(proto_out, protocol.READY, protocol.json_payload(
        pid=os.getpid(), inference=f"{type(inference).__module__}.{type(inference).__qualname__}",
        python=sys.version.split()[0], concurrency=concurrency,
    ))
    log.info("model %r ready (%s, %d predict(s) at once)", name, type(inference).__qualname__, concurrency)
    answers = _Answerer(inference, proto_out, redact, folder)
    # One predict at a time runs on this thread, as it always did; more run on a pool (D61).
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="predict") if concurrency > 1 else None
    while True:
        frame = protocol.read_frame(proto_in)
        if frame is None or frame.ftype == protocol.SHUTDOWN:
            return 0
        if frame.ftype not in (protocol.REQUEST, protocol.STREAM):
            raise protocol.ProtocolError(f"unexpected frame {frame.ftype!r} from the supervisor")
        if pool is None:
            answers.answer(frame)
        else:
            pool.submit(answers.answer_or_exit, frame)


def declared_concurrency(inference: Any) -> int:
    """How many predicts the model says it answers at once: its inference's `predict_concurrency`
    (thread-safe models declare it; D61), else 1."""
    value = getattr(inference, "predict_concurrency", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError(f"{type(inference).__qualname__}.predict_concurrency must be an integer >= 1; got {value!r}")
    return value


class _Answerer:
    """Answers one REQUEST or STREAM frame; its frames, tagged with the request's id, are written
    under one lock (frames of predicts running at once must not interleave)."""

    def __init__(self, inference: Any, proto_out: BinaryIO, redact: Any, folder: Any) -> None:
        from wallaroo_pulumi.runtime.sidekick import protocol

        self._protocol = protocol  # imported after the CPUs are pinned, once
        self._inference = inference
        self._out = proto_out
        self._redact = redact
        self._folder = folder
        self._lock = threading.Lock()

    def _write(self, ftype: bytes, payload: Any, rid: int) -> None:
        with self._lock:
            self._protocol.write_frame(self._out, ftype, payload, rid)

    def answer(self, frame: Any) -> None:
        protocol = self._protocol
        try:
            table = protocol.ipc_to_table(frame.payload)
            data = protocol.table_to_inference_data(table)
            stream = getattr(self._inference, "predict_stream", None) if frame.ftype == protocol.STREAM else None
            output = self._inference.predict(data) if stream is None else self._send_chunks(stream(data), frame.rid)
            body = protocol.table_to_ipc(protocol.inference_data_to_table(output, table.num_rows))
        except Exception as exc:  # noqa: BLE001 - the model's error is this request's answer
            self._write(protocol.ERROR, _error_payload(exc, self._redact, self._folder), frame.rid)
            return
        self._write(protocol.RESPONSE, body, frame.rid)

    def answer_or_exit(self, frame: Any) -> None:
        """`answer` on a pool thread: a model that exits (SystemExit) or a lost supervisor ends the
        worker, as they do on the main thread."""
        try:
            self.answer(frame)
        except BrokenPipeError:
            os._exit(0)  # the supervisor went away
        except BaseException as exc:  # noqa: BLE001 - e.g. sys.exit() in the model: the worker ends
            log.error("model ended the worker: %s", type(exc).__name__)
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1)

    def _send_chunks(self, chunks: Any, rid: int) -> Any:
        """Send each chunk a `predict_stream` generator yields as a CHUNK frame, as it comes;
        the generator's return value is the whole answer."""
        protocol = self._protocol
        while True:
            try:
                chunk = next(chunks)
            except StopIteration as done:
                return done.value
            self._write(protocol.CHUNK, protocol.table_to_ipc(protocol.inference_data_to_table(chunk, None)), rid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wallaroo_pulumi.runtime.sidekick.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--cpu-affinity", default=None, help="comma-separated CPU ids")
    parser.add_argument("--env-names", default="",
                        help="comma-separated names of the model's env: their values, read from our env, are redacted")
    parser.add_argument("--scratch-size", default="", help="the step's scratch_size, named when a write finds it full")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="predicts answered at once (default: the model's own predict_concurrency, else 1)")
    args = parser.parse_args(argv)
    global _SCRATCH_SIZE  # noqa: PLW0603 - set once, before the model loads
    _SCRATCH_SIZE = args.scratch_size

    logging.basicConfig(
        level=os.environ.get("WALLAROO_SIDEKICK_LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    proto_in, proto_out = _take_protocol_fds()
    cpus = [int(c) for c in args.cpu_affinity.split(",") if c.strip()] if args.cpu_affinity else None
    _pin_cpus(cpus)

    from wallaroo_pulumi.runtime.sidekick.redact import EnvRedactor

    names = [n for n in args.env_names.split(",") if n]
    redact = EnvRedactor.for_env({n: os.environ.get(n, "") for n in names})
    try:
        return serve(args.model_dir, args.name, proto_in, proto_out, redact, args.concurrency)
    except BrokenPipeError:
        return 0  # the supervisor went away


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: model threads or atexit hooks must not keep a stopping sidekick alive.
    os._exit(code)
