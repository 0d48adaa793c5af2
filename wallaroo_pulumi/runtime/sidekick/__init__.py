"""Sidekicks: each BYOP model step runs in its own Python process.

A crash, a memory blow-up or a leaked credential in one model must not take
down the runtime or reach another model, so every model step (per replica)
gets its own worker process with its own environment and resource limits.

- ``loader``: unpack a BYOP zip safely and build its ``mac`` inference.
- ``worker``: the child process (``python -m wallaroo_pulumi.runtime.sidekick.worker``).
- ``protocol``: the framed stdin/stdout protocol and Arrow <-> numpy conversion.
- ``process``: the asyncio supervisor (``Sidekick``, ``SidekickPool``) the engine uses.
"""
