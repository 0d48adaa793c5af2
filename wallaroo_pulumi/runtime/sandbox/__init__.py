"""The sandbox every sidekick worker and every pip install of a model's requirements runs in:
`support` says what this kernel offers, `sandbox.Sandbox` turns a command into a confined one,
`confine` is the launcher that confines itself and then execs it (docs/decisions.md, D31)."""
