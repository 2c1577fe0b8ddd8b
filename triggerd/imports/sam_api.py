"""SAM `Api` and `HttpApi` events as webhook sources: route, payload format, stage and stage
variables, binary media types and CORS from the API resource (and Globals)."""

from __future__ import annotations

from typing import Any

from triggerd.imports.sam_functions import merge_globals
from triggerd.imports.sam_props import Props, as_bool
from triggerd.imports.sam_template import Unresolved


def api_source(props: Props) -> dict[str, Any]:
    """An `Api` event: a webhook with payload 1.0 and its REST API's settings."""
    path = props.take("Path")
    if not path:
        raise Unresolved("an Api event needs a Path")
    source: dict[str, Any] = {
        "type": "webhook",
        "path": str(path),
        "method": _method(props.take("Method")),
        "payload_format": "1.0",
    }
    _timeout(props, source)
    api = _api_resource(props, props.node("RestApiId"), "AWS::Serverless::Api")
    source["stage"] = str(api.get("StageName", "Prod"))
    variables = api.get("Variables")
    if isinstance(variables, dict) and variables:
        source["stage_variables"] = {str(k): str(v) for k, v in variables.items()}
    binary = api.get("BinaryMediaTypes")
    if isinstance(binary, list) and binary:
        source["binary_media_types"] = [str(b).replace("~1", "/") for b in binary]
    cors = _rest_cors(api.get("Cors"))
    if cors:
        source["cors"] = cors
    for key in ("Auth", "RequestModel", "RequestParameters"):
        if key in props:
            props.take(key)
            props.out.warn(f"{props.where}.{key}", "not enforced locally")
    return source


def http_api_source(props: Props) -> dict[str, Any]:
    """An `HttpApi` event: a webhook with payload 2.0 (or 1.0) and its HTTP API's settings."""
    path = props.take("Path")
    source: dict[str, Any] = {
        "type": "webhook",
        "path": str(path) if path else "/{proxy+}",
        "method": _method(props.take("Method")),
        "payload_format": str(props.take("PayloadFormatVersion", "2.0")),
    }
    _timeout(props, source)
    api = _api_resource(props, props.node("ApiId"), "AWS::Serverless::HttpApi")
    stage = str(api.get("StageName", "$default"))
    source["stage"] = stage
    variables = api.get("StageVariables")
    if isinstance(variables, dict) and variables:
        source["stage_variables"] = {str(k): str(v) for k, v in variables.items()}
    cors = _http_cors(api.get("CorsConfiguration"))
    if cors:
        source["cors"] = cors
    for key in ("Auth", "RouteSettings"):
        if key in props:
            props.take(key)
            props.out.warn(f"{props.where}.{key}", "not enforced locally")
    return source


def _timeout(props: Props, source: dict[str, Any]) -> None:
    millis = props.take("TimeoutInMillis")
    if millis is not None:
        source["timeout_s"] = int(millis) / 1000


def _api_resource(props: Props, node: Any, kind: str) -> dict[str, Any]:
    """The API's properties (Globals for that API type merged in), {} for the implicit
    API."""
    tpl = props.tpl
    globals_ = tpl.data.get("Globals")
    section = globals_.get(kind.split("::")[-1]) if isinstance(globals_, dict) else None
    found: dict[str, Any] = dict(section) if isinstance(section, dict) else {}
    if node is not None:
        ref = node.get("Ref") if isinstance(node, dict) else None
        if not (isinstance(ref, str) and tpl.resource_type(ref) == kind):
            raise Unresolved(f"{node!r} is not a {kind} of the template")
        own = tpl.resources[ref].get("Properties") or {}
        _warn_api_properties(props, ref, own, CARRIED[kind])
        if isinstance(own, dict):
            found = merge_globals(found, dict(own))  # maps merged (Variables, Cors...)
    try:
        resolved = tpl.resolve(found)
    except Unresolved as exc:
        props.out.warn(props.where, f"the API's settings are not carried over: {exc}")
        return {}
    return resolved if isinstance(resolved, dict) else {}


#: The API resources' properties that reach the webhook sources.
CARRIED = {
    "AWS::Serverless::Api": {"StageName", "Variables", "BinaryMediaTypes", "Cors"},
    "AWS::Serverless::HttpApi": {"StageName", "StageVariables", "CorsConfiguration"},
}


def _warn_api_properties(props: Props, ref: str, own: Any, carried: set[str]) -> None:
    """A warning, once per API, for each of its properties that no route carries over."""
    seen = {w.where for w in props.out.warnings}
    for key in sorted(own if isinstance(own, dict) else {}):
        where = f"Resources.{ref}.Properties.{key}"
        if key not in carried and where not in seen:
            props.out.warn(where, "not carried over to the API's webhook routes")


def _method(value: Any) -> str:
    text = str(value or "ANY").upper()
    return "ANY" if text in ("X-AMAZON-APIGATEWAY-ANY-METHOD", "*") else text


def _unquote(value: Any) -> str:
    return str(value).strip().strip("'")


def _rest_cors(cors: Any) -> dict[str, Any] | None:
    """A REST API's Cors (a quoted origin, or AllowOrigin/AllowMethods/... each quoted)."""
    if cors is None:
        return None
    if isinstance(cors, str):
        return {"allow_origins": [_unquote(cors)]}
    if not isinstance(cors, dict) or "AllowOrigin" not in cors:
        return None
    out: dict[str, Any] = {"allow_origins": [_unquote(cors["AllowOrigin"])]}
    if "AllowMethods" in cors:
        out["allow_methods"] = [m.strip() for m in _unquote(cors["AllowMethods"]).split(",")]
    if "AllowHeaders" in cors:
        out["allow_headers"] = [h.strip() for h in _unquote(cors["AllowHeaders"]).split(",")]
    if "MaxAge" in cors:
        out["max_age_s"] = int(_unquote(cors["MaxAge"]))
    if "AllowCredentials" in cors:
        out["allow_credentials"] = as_bool(cors["AllowCredentials"])
    return out


def _http_cors(cors: Any) -> dict[str, Any] | None:
    """An HTTP API's CorsConfiguration (true, or AllowOrigins/AllowMethods/... lists)."""
    if cors is True:
        return {"allow_origins": ["*"]}
    if not isinstance(cors, dict) or not cors.get("AllowOrigins"):
        return None
    out: dict[str, Any] = {"allow_origins": [str(o) for o in cors["AllowOrigins"]]}
    for sam, key in (
        ("AllowMethods", "allow_methods"),
        ("AllowHeaders", "allow_headers"),
        ("ExposeHeaders", "expose_headers"),
    ):
        if cors.get(sam):
            out[key] = [str(v) for v in cors[sam]]
    if "MaxAge" in cors:
        out["max_age_s"] = int(cors["MaxAge"])
    if "AllowCredentials" in cors:
        out["allow_credentials"] = as_bool(cors["AllowCredentials"])
    return out
