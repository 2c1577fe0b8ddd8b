"""Who may read the control listener's plain HTTP endpoints (/metrics, /readyz, /statusz and
the functions and triggers /healthz names), which Prometheus and health checks call without
SigV4.

A peer on loopback (this machine: `triggerd status`, a local agent) always may. A peer
elsewhere needs `Authorization: Bearer <daemon.metrics_token>` when a token is configured
(Prometheus's `authorization`/`bearer_token` send it); without a token, only when the operator
opened the control surface with `allow_unauthenticated = true`. Otherwise /metrics, /readyz
and /statusz are refused (401 without a token, 403 with a wrong one or when none can work) and
/healthz tells the status only, as the public listener does: what the access keys' policies
hide is not given away on the side."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from triggerd.config.model import DaemonSettings
from triggerd.http.refusals import mark_refused
from triggerd.types import HttpHandler

__all__ = ["ControlAccess", "peer_is_loopback"]


def peer_is_loopback(request: web.BaseRequest) -> bool:
    """Whether the connection comes from loopback (the transport's peer, never a header)."""
    remote = request.remote
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class ControlAccess:
    """The check of one daemon's settings, shared by the control endpoints."""

    def __init__(self, settings: DaemonSettings) -> None:
        token = settings.metrics_token
        self._token = token.get_secret_value().encode() if token is not None else None
        self._open = settings.allow_unauthenticated

    def allowed(self, request: web.BaseRequest) -> bool:
        if peer_is_loopback(request):
            return True
        if self._token is None:
            return self._open
        return self._presented(request) is True

    def _presented(self, request: web.BaseRequest) -> bool | None:
        """True for the right token, False for another one, None when none was sent."""
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        assert self._token is not None
        given = value.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._token)

    def refusal(self, request: web.BaseRequest) -> web.Response | None:
        """None when the request may be served; else the refusal (marked for the counter)."""
        if self.allowed(request):
            return None
        if self._token is None:
            mark_refused(request, "control_loopback_only")
            return web.json_response(
                {"message": "Forbidden: served to loopback only (see daemon.metrics_token)"},
                status=403,
            )
        if self._presented(request) is None:
            mark_refused(request, "metrics_token_missing")
            return web.json_response(
                {"message": "Unauthorized: send Authorization: Bearer <daemon.metrics_token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="triggerd"'},
            )
        mark_refused(request, "metrics_token_invalid")
        return web.json_response({"message": "Forbidden: wrong token"}, status=403)

    def guard(self, handler: HttpHandler) -> HttpHandler:
        """`handler`, served only to the requests `allowed` lets through."""

        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            refused = self.refusal(request)
            if refused is not None:
                return refused
            return await handler(request)

        return guarded
