"""The daemon's dynamic HTTP routes: API Gateway style templates (`/a/{id}`, `/b/{proxy+}`)
that push sources add while they start, matched most-specific first as API Gateway does."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp import web

from triggerd.types import HttpHandler

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"})


@dataclass(frozen=True, slots=True)
class RouteMatch:
    method: str
    template: str
    #: Path parameters, URL-decoded; `{proxy+}` holds the rest of the path without a leading /.
    params: dict[str, str]


#: Where the dispatcher leaves the match on the request for the route's handler.
ROUTE_KEY: web.RequestKey[RouteMatch] = web.RequestKey("route", RouteMatch)


@dataclass(slots=True)
class _Route:
    method: str
    template: str
    segments: list[str]
    handler: HttpHandler
    owner: str

    @property
    def greedy(self) -> bool:
        return bool(self.segments) and self.segments[-1].endswith("+}")

    def specificity(self) -> tuple[int, int, int, int]:
        static = sum(1 for s in self.segments if not s.startswith("{"))
        # more static segments first, then longer, then non-greedy, then exact method
        return (-static, -len(self.segments), int(self.greedy), int(self.method == "ANY"))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if seg.endswith("+}"):
                rest = parts[i:]
                if not rest or rest == [""]:
                    return None
                params[seg[1:-2]] = "/".join(rest)
                return params
            if i >= len(parts):
                return None
            if seg.startswith("{"):
                if parts[i] == "":
                    return None
                params[seg[1:-1]] = parts[i]
            elif seg != parts[i]:
                return None
        return params if len(parts) == len(self.segments) else None


def split_template(template: str) -> list[str]:
    if not template.startswith("/"):
        raise ValueError(f"route {template!r} must start with /")
    segments = [s for s in template.strip("/").split("/")] if template != "/" else []
    for i, seg in enumerate(segments):
        if seg.startswith("{") != seg.endswith("}"):
            raise ValueError(f"route {template!r}: bad parameter segment {seg!r}")
        if seg.endswith("+}") and i != len(segments) - 1:
            raise ValueError(f"route {template!r}: a greedy {seg} must be the last segment")
        if seg == "" and template != "/":
            raise ValueError(f"route {template!r}: empty segment")
    return segments


@dataclass
class Routes:
    """Implements triggerd.types.HttpMount."""

    _routes: list[_Route] = field(default_factory=list)

    def add_route(self, method: str, template: str, handler: HttpHandler, *, owner: str) -> None:
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unsupported HTTP method {method!r}")
        segments = split_template(template)
        shape = [("{}" if s.startswith("{") else s) for s in segments]
        for r in self._routes:
            if (
                r.method == method
                and [("{}" if s.startswith("{") else s) for s in r.segments] == shape
            ):
                raise ValueError(f"route {method} {template} is already served by {r.owner}")
        self._routes.append(_Route(method, template, segments, handler, owner))
        self._routes.sort(key=_Route.specificity)

    def remove_routes(self, owner: str) -> None:
        self._routes = [r for r in self._routes if r.owner != owner]

    def match(self, method: str, path: str) -> tuple[HttpHandler, RouteMatch] | bool | None:
        """(handler, match); False when the path exists for other methods; None otherwise.
        `path` is the raw (still percent-encoded) path, so that an encoded `/` stays inside
        one segment; parameters are decoded once."""
        stripped = path.strip("/")
        parts = stripped.split("/") if stripped else []
        path_known = False
        for r in self._routes:
            params = r.match(parts)
            if params is None:
                continue
            if r.method in (method, "ANY"):
                if params:
                    params = {k: unquote(v) for k, v in params.items()}
                return r.handler, RouteMatch(r.method, r.template, params)
            path_known = True
        return False if path_known else None

    def __len__(self) -> int:
        return len(self._routes)
