"""POST / on the control listener: the AWS APIs that share the root path.

AWS's SNS speaks the Query protocol (a form body with `Action=Publish&...`, XML answers) and
EventBridge the JSON 1.1 protocol (`X-Amz-Target: AWSEvents.PutEvents`, a JSON body); both
SDKs post to `/` of the endpoint they are given. `RootApis` holds one handler per protocol
key and `dispatch` picks it from the headers alone, before anything reads the body:

- a request with `X-Amz-Target: <Prefix>.<Operation>` goes to the handler registered for
  `<Prefix>` (`AWSEvents` for EventBridge);
- a form-encoded request without it goes to the Query-protocol handler (SNS).

Each handler authenticates (SigV4, `triggerd.http.sigv4`) and reads the body itself, with the
limits of `triggerd.http.body`. Anything else gets AWS's UnknownOperationException shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

from triggerd.types import HttpHandler

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["ROOT_ROUTE", "RootApis"]

ROOT_ROUTE = "/"
_FORM = "application/x-www-form-urlencoded"


class RootApis:
    """The handlers of the AWS APIs served on POST / (registered by the services that the
    config declares; empty when none is)."""

    def __init__(self) -> None:
        self._targets: dict[str, HttpHandler] = {}
        self._query: HttpHandler | None = None

    def add_target(self, prefix: str, handler: HttpHandler) -> None:
        """Serve the JSON-protocol requests whose X-Amz-Target starts with `prefix` + '.'."""
        if prefix in self._targets:
            raise ValueError(f"X-Amz-Target prefix {prefix!r} is served already")
        self._targets[prefix] = handler

    def set_query(self, handler: HttpHandler) -> None:
        """Serve the Query-protocol (form-encoded) requests."""
        if self._query is not None:
            raise ValueError("the Query protocol is served already")
        self._query = handler

    def __bool__(self) -> bool:
        return bool(self._targets) or self._query is not None

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        target = request.headers.get("X-Amz-Target")
        if target is not None:
            prefix, dot, _operation = target.partition(".")
            handler = self._targets.get(prefix) if dot else None
            if handler is not None:
                return await handler(request)
            return _unknown(request, f"X-Amz-Target {target[:100]!r} names no served API")
        if request.content_type == _FORM and self._query is not None:
            return await self._query(request)
        return _unknown(request, "POST / needs X-Amz-Target or a form-encoded Action")


def _unknown(request: web.BaseRequest, message: str) -> web.Response:
    # Imported here: the daemon builds a RootApis before it knows it will serve HTTP.
    from aiohttp import web

    from triggerd.http.refusals import mark_refused

    mark_refused(request, "unknown_operation")
    return web.json_response(
        {"__type": "UnknownOperationException", "message": message},
        status=400,
        headers={"x-amzn-ErrorType": "UnknownOperationException"},
    )
