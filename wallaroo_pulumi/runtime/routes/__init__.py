"""HTTP routes, one module per API area: each parses the request, calls one service, answers."""

from starlette.requests import Request

from wallaroo_pulumi.runtime.services.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    return request.app.state.rt
