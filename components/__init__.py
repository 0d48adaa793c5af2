"""Ready-made Pulumi components and BYOP model folders (installed as `wallaroo_pulumi.components`)."""
