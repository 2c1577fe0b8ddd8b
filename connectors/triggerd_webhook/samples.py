"""`triggerd generate-event webhook`: a sample event of each payload format, built by the
same code as a request's event, without the HTTP server (no aiohttp import)."""

from __future__ import annotations

from collections.abc import Mapping

from triggerd.http.templates import RouteTemplate
from triggerd.types import ConfigError, JSONDict
from triggerd_webhook.events import (
    HttpRequest,
    PayloadFormat,
    RequestMeta,
    RouteInfo,
    api_id,
    build_event,
)

__all__ = ["sample_event"]


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event webhook`: options format (1.0, 2.0, url), method, path,
    template, query, body, stage."""
    formats: dict[str, PayloadFormat] = {"1.0": "1.0", "2.0": "2.0", "url": "url"}
    fmt = formats.get(options.get("format", "2.0"))
    if fmt is None:
        raise ConfigError([f"format: {options['format']!r} is not 1.0, 2.0 or url"])
    method = options.get("method", "POST").upper()
    path = options.get("path", "/orders/42")
    template = options.get("template", "/orders/{id}" if "path" not in options else path)
    try:
        params = RouteTemplate.parse(template).match(path)
    except ValueError as exc:
        raise ConfigError([f"template: {exc}"]) from None
    if params is None:
        raise ConfigError([f"path: {path!r} does not match template {template!r}"])
    body = options.get("body", '{"qty":1}').encode()
    req = HttpRequest(
        method=method,
        raw_path=path,
        raw_query=options.get("query", ""),
        headers=[
            ("Host", "api.example.com"),
            ("User-Agent", "curl/8.0"),
            ("Content-Type", "application/json"),
        ],
        body=body,
        source_ip="203.0.113.7",
        scheme="https",
        server_port=443,
    )
    stage = options.get("stage", "prod" if fmt == "1.0" else "$default")
    route = RouteInfo(
        method=method, template=template, params=params, stage=stage, api_id=api_id("sample")
    )
    meta = RequestMeta(
        request_id="c6af9ac6-7b61-11e6-9a41-93e8deadbeef" if fmt != "2.0" else "JKJaXmPLvHcESHA=",
        time_s=1583348638.390,
        extended_request_id="KxKXzGbCIAMFuJg=",
        trace_id="Root=1-5e6a8d5e-0123456789abcdef01234567",
    )
    return build_event(fmt, req, route, meta)
