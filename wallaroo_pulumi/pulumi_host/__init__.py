"""A Python implementation of Pulumi's Python language host.

Why it exists: the Pulumi CLI is built here from its Go modules, but the Go
module proxy these machines reach refuses every version of the Go language
host module (`github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3`),
so `pulumi up` on a `runtime: python` project would have nothing to run the
program with. The host is a small gRPC service (`LanguageRuntime`) whose stubs
ship in the pulumi Python SDK, so we serve it ourselves:

- `language_host`: the `pulumi-language-python` plugin the engine launches;
- `exec_program`: the helper it runs the user's program with (one process per
  `Run`, as the Go host does, so a program's crash cannot take the host down).
"""
