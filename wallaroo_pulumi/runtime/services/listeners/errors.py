"""The listener service's errors: `WallarooError`s answered with source "listeners"."""

from __future__ import annotations

from wallaroo_pulumi.runtime.core.errors import BadRequest, Conflict, NotFound, WallarooError


class ListenerError(WallarooError):
    """Any failure of the listener service."""

    source = "listeners"


class BadListenerRequest(ListenerError, BadRequest):
    """A bad field in a listener request; the message names it."""


class ListenerNotFound(ListenerError, NotFound):
    """An unknown task, run, score or scored pipeline."""


class ListenerConflict(ListenerError, Conflict):
    """A task in a state that does not allow the request."""


class ListenerUnavailable(ListenerError):
    """The service is not started."""

    status = 503


class ListenerRunError(ListenerError):
    """A listener run failed; recorded on the run, never an HTTP answer."""


class NotThisRunsKey(ListenerError):
    """A call of the listener run API made with a key that is not the calling run's own."""

    status = 403
