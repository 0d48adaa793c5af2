"""HTTP transport: httpx with bearer auth and error mapping. Tokens are never
put into exception messages or reprs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from wallaroo_pulumi.client.errors import RuntimeUnavailableError, error_for


class Transport:
    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )

    def __repr__(self) -> str:
        return f"Transport(url={self.url!r}, token=[secret])"

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
        context: str = "",
        auth: bool = True,
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            request = self._http.build_request(method, path, json=json, content=content, headers=headers, **kwargs)
            if not auth:
                request.headers.pop("Authorization", None)
            response = self._http.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RuntimeUnavailableError(self.url, exc) from None
        except httpx.RemoteProtocolError as exc:
            raise RuntimeUnavailableError(self.url, exc) from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code in (401, 403):  # say which runtime refused, and what to set
                context = f"{context} at {self.url}" if context else self.url
            raise error_for(response.status_code, body, response.text[:2000], context)
        return response

    def post_json(self, path: str, payload: dict[str, Any], context: str = "", **kw: Any) -> Any:
        return self.request("POST", path, json=payload, context=context, **kw).json()
