"""The bundled runtime: a Wallaroo-compatible MLOps API served on one data directory.

`create_app(settings)` builds the ASGI app; `wallaroo-pulumi runtime serve` runs it.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wallaroo_pulumi.runtime.app import create_app
    from wallaroo_pulumi.runtime.settings import RuntimeSettings

__all__ = ["RuntimeSettings", "create_app"]


def __getattr__(name: str):  # lazy: a sidekick worker (and its sandbox launcher) imports this package, not pydantic or FastAPI
    if name == "create_app":
        from wallaroo_pulumi.runtime.app import create_app

        return create_app
    if name == "RuntimeSettings":
        from wallaroo_pulumi.runtime.settings import RuntimeSettings

        return RuntimeSettings
    raise AttributeError(name)
