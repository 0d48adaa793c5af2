"""The sidekick worker: one BYOP model in its own process.

Run as ``python -m wallaroo_pulumi.runtime.sidekick.worker --model-dir DIR --name NAME
[--cpu-affinity 0,1] [--env-names A,B]``: pin CPUs, load the model, READY (or LOAD_ERROR and
exit 3), then answer REQUEST frames (:mod:`.protocol`) until SHUTDOWN or EOF.
"""

from __future__ import annotations

import argparse
import errno
import io
import logging
import os
import sys
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


def serve(model_dir: str, name: str, proto_in: BinaryIO, proto_out: BinaryIO, redact: Any) -> int:
    """Load the model, then answer requests until SHUTDOWN/EOF. Returns the exit code."""
    from pathlib import Path

    from wallaroo_pulumi.runtime.sidekick import protocol
    from wallaroo_pulumi.runtime.sidekick.loader import ModelLoadError, load_inference

    folder = Path(model_dir).resolve()
    try:
        protocol.warm_up()
        inference = load_inference(folder, name)
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
        python=sys.version.split()[0],
    ))
    log.info("model %r ready (%s)", name, type(inference).__qualname__)

    while True:
        frame = protocol.read_frame(proto_in)
        if frame is None:
            return 0
        ftype, payload = frame
        if ftype == protocol.SHUTDOWN:
            return 0
        if ftype not in (protocol.REQUEST, protocol.STREAM):
            raise protocol.ProtocolError(f"unexpected frame {ftype!r} from the supervisor")
        try:
            table = protocol.ipc_to_table(payload)
            data = protocol.table_to_inference_data(table)
            stream = getattr(inference, "predict_stream", None) if ftype == protocol.STREAM else None
            output = inference.predict(data) if stream is None else _send_chunks(stream(data), proto_out)
            answer = protocol.inference_data_to_table(output, table.num_rows)
            body = protocol.table_to_ipc(answer)
        except Exception as exc:  # noqa: BLE001 - the model's error is this request's answer
            protocol.write_frame(proto_out, protocol.ERROR, _error_payload(exc, redact, folder))
            continue
        protocol.write_frame(proto_out, protocol.RESPONSE, body)


def _send_chunks(chunks: Any, proto_out: BinaryIO) -> Any:
    """Send each chunk a `predict_stream` generator yields as a CHUNK frame, as it comes;
    the generator's return value is the whole answer."""
    from wallaroo_pulumi.runtime.sidekick import protocol

    while True:
        try:
            chunk = next(chunks)
        except StopIteration as done:
            return done.value
        protocol.write_frame(proto_out, protocol.CHUNK, protocol.table_to_ipc(protocol.inference_data_to_table(chunk, None)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wallaroo_pulumi.runtime.sidekick.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--cpu-affinity", default=None, help="comma-separated CPU ids")
    parser.add_argument("--env-names", default="",
                        help="comma-separated names of the model's env: their values, read from our env, are redacted")
    parser.add_argument("--scratch-size", default="", help="the step's scratch_size, named when a write finds it full")
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
        return serve(args.model_dir, args.name, proto_in, proto_out, redact)
    except BrokenPipeError:
        return 0  # the supervisor went away


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: model threads or atexit hooks must not keep a stopping sidekick alive.
    os._exit(code)
