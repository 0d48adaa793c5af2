"""`pulumi-language-python`: the engine's gRPC `LanguageRuntime` for Python programs (D2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

from .exec_program import EXIT_REPORTED

PLUGIN_VERSION = "3.260.0"
_LIST_DISTS = (
    "import json, importlib.metadata as m;"
    "print(json.dumps(sorted({(d.metadata['Name'] or '', d.version) for d in m.distributions()})))"
)


def _options(info: Any) -> dict[str, Any]:
    if info is None or not info.HasField("options"):
        return {}
    return json_format.MessageToDict(info.options)


def python_for(info: Any) -> str:
    """The interpreter a program runs with: its `virtualenv` option, $PULUMI_PYTHON_CMD, or ours."""
    venv = _options(info).get("virtualenv")
    if venv:
        root = Path(info.root_directory or ".")
        path = Path(venv) if Path(venv).is_absolute() else root / venv
        python = path / "bin" / "python"
        if not python.exists():
            raise FileNotFoundError(
                f"virtualenv {path} from Pulumi.yaml has no bin/python; run `pulumi install` "
                "or create it with `python -m venv`"
            )
        return str(python)
    return os.environ.get("PULUMI_PYTHON_CMD") or sys.executable


class LanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    """The RPCs the engine calls for `pulumi preview/up/destroy/refresh/import/about/install`."""

    def __init__(self, engine_address: str) -> None:
        self.engine_address = engine_address
        self.children: set[subprocess.Popen[bytes]] = set()
        self.lock = threading.Lock()

    def Handshake(self, request: Any, context: Any) -> Any:
        self.engine_address = request.engine_address or self.engine_address
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request: Any, context: Any) -> Any:
        return plugin_pb2.PluginInfo(version=PLUGIN_VERSION)

    def GetRequiredPlugins(self, request: Any, context: Any) -> Any:
        # Plugins load on demand when a resource needs them. Reporting them up front
        # would make the engine try to download them, which offline machines cannot.
        return language_pb2.GetRequiredPluginsResponse()

    def GetRequiredPackages(self, request: Any, context: Any) -> Any:
        return language_pb2.GetRequiredPackagesResponse()

    def About(self, request: Any, context: Any) -> Any:
        python = python_for(request.info if request.HasField("info") else None)
        version = subprocess.run(
            [python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
        return language_pb2.AboutResponse(executable=python, version=version)

    def GetProgramDependencies(self, request: Any, context: Any) -> Any:
        python = python_for(request.info if request.HasField("info") else None)
        out = subprocess.run([python, "-c", _LIST_DISTS], capture_output=True, text=True, check=True)
        deps = [language_pb2.DependencyInfo(name=n, version=v) for n, v in json.loads(out.stdout)]
        return language_pb2.GetProgramDependenciesResponse(dependencies=deps)

    def InstallDependencies(self, request: Any, context: Any) -> Iterator[Any]:
        requirements = Path(request.directory) / "requirements.txt"
        if not requirements.exists():
            yield language_pb2.InstallDependenciesResponse(stdout=b"no requirements.txt; nothing to install\n")
            return
        python = python_for(request.info if request.HasField("info") else None)
        proc = subprocess.Popen(
            [python, "-m", "pip", "install", "-r", str(requirements)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            yield language_pb2.InstallDependenciesResponse(stdout=line)
        if proc.wait() != 0:
            context.abort(grpc.StatusCode.UNKNOWN, f"pip install -r {requirements} failed")

    def Run(self, request: Any, context: Any) -> Any:
        info = request.info if request.HasField("info") else None
        program_dir = (info.program_directory if info else "") or request.pwd
        entry = (info.entry_point if info else "") or request.program or "."
        program = Path(program_dir) / entry
        env = dict(os.environ)
        env.update(
            PULUMI_PROJECT=request.project,
            PULUMI_STACK=request.stack,
            PULUMI_MONITOR=request.monitor_address,
            PULUMI_ENGINE=(request.args[0] if request.args else self.engine_address),
            PULUMI_PARALLEL=str(max(request.parallel, 1)),
            PULUMI_DRY_RUN="true" if request.dryRun else "false",
            PULUMI_ORGANIZATION=request.organization or "organization",
            PULUMI_ROOT_DIRECTORY=(info.root_directory if info else "") or request.pwd,
            PULUMI_CONFIG=json.dumps(dict(request.config)),
            PULUMI_CONFIG_SECRET_KEYS=json.dumps(list(request.configSecretKeys)),
        )
        try:
            python = python_for(info)
        except FileNotFoundError as exc:
            return language_pb2.RunResponse(error=str(exc))
        cmd = [python, "-u", "-m", "wallaroo_pulumi.pulumi_host.exec_program", str(program)]
        proc = subprocess.Popen(cmd, cwd=request.pwd or None, env=env)
        with self.lock:
            self.children.add(proc)
        try:
            code = proc.wait()
        finally:
            with self.lock:
                self.children.discard(proc)
        if code == 0:
            return language_pb2.RunResponse()
        if code == EXIT_REPORTED:
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=f"Python program {program} exited with code {code}")

    def RunPlugin(self, request: Any, context: Any) -> Iterator[Any]:
        info = request.info if request.HasField("info") else None
        program = Path(request.program or request.pwd)
        entry = program / "__main__.py" if program.is_dir() else program
        env = dict(os.environ)
        env.update(kv.split("=", 1) for kv in request.env if "=" in kv)
        proc = subprocess.Popen(
            [python_for(info), "-u", str(entry), *request.args],
            cwd=request.pwd or None, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        # The engine reads the plugin's port from the first stdout line; pass stdout through
        # as it comes and stderr after exit (plugins log little there).
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            yield language_pb2.RunPluginResponse(stdout=chunk)
        stderr = proc.stderr.read() if proc.stderr else b""
        if stderr:
            yield language_pb2.RunPluginResponse(stderr=stderr)
        yield language_pb2.RunPluginResponse(exitcode=proc.wait())

    def Cancel(self, request: Any, context: Any) -> Any:
        with self.lock:
            for proc in self.children:
                proc.terminate()
        return empty_pb2.Empty()


def main(argv: list[str] | None = None) -> None:
    args = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")]
    engine_address = args[-1] if args else ""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 400 * 1024 * 1024)],
    )
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageHost(engine_address), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:  # the engine stops plugins with SIGINT: a normal exit
        server.stop(0)


if __name__ == "__main__":
    main()
