"""Print the version a Pulumi resource provider plugin reports (GetPluginInfo), for scripts/k8s-tools."""

import subprocess
import sys

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2_grpc

# A plugin serves on a port it prints first; it takes the engine's address, dialled only when used.
proc = subprocess.Popen([sys.argv[1], "127.0.0.1:1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    port = int(proc.stdout.readline().strip())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        info = provider_pb2_grpc.ResourceProviderStub(channel).GetPluginInfo(empty_pb2.Empty(), timeout=30)
    print(info.version)
finally:
    proc.kill()
    proc.wait()
