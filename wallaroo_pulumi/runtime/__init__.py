"""The bundled runtime: a Wallaroo-compatible MLOps API served on one data directory.

`create_app(settings)` builds the ASGI app; `wallaroo-pulumi runtime serve` runs it.
"""

from wallaroo_pulumi.runtime.settings import RuntimeSettings

__all__ = ["RuntimeSettings", "create_app"]


def __getattr__(name: str):  # lazy: importing the log store must not pull in FastAPI
    if name == "create_app":
        from wallaroo_pulumi.runtime.app import create_app

        return create_app
    raise AttributeError(name)
