"""The Pulumi dynamic resources: one module per resource, plus their shared base and progress."""
