"""The daemon's dynamic HTTP routes: API Gateway style templates (`/a/{id}`, `/b/{proxy+}`,
parsed and matched by `templates.RouteTemplate`) that push sources add while they start,
matched most-specific first as API Gateway does."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from triggerd.http.templates import METHODS, RouteTemplate, decode_params, split_path
from triggerd.types import HttpHandler

__all__ = ["METHODS", "ROUTE_KEY", "RouteMatch", "RouteTemplate", "Routes", "TriggerMount"]


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
    template: RouteTemplate
    handler: HttpHandler
    owner: str

    def specificity(self) -> tuple[int, int, int, int]:
        segments = self.template.segments
        static = sum(1 for s in segments if not s.startswith("{"))
        # more static segments first, then longer, then non-greedy, then exact method
        return (-static, -len(segments), int(self.template.greedy), int(self.method == "ANY"))


@dataclass
class Routes:
    """Implements triggerd.types.HttpMount."""

    _routes: list[_Route] = field(default_factory=list)

    def add_route(self, method: str, template: str, handler: HttpHandler, *, owner: str) -> None:
        self._routes.append(self._checked(method, template, handler, owner, None))
        self._routes.sort(key=_Route.specificity)

    def _checked(
        self, method: str, template: str, handler: HttpHandler, owner: str, replacing: str | None
    ) -> _Route:
        """The route, or ValueError when it is malformed or taken (by an owner other than
        `replacing`, whose routes are about to go)."""
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unsupported HTTP method {method!r}")
        parsed = RouteTemplate.parse(template)
        for r in self._routes:
            if r.owner != replacing and r.method == method and r.template.shape == parsed.shape:
                raise ValueError(f"route {method} {template} is already served by {r.owner}")
        return _Route(method, parsed, handler, owner)

    def remove_routes(self, owner: str) -> None:
        self._routes = [r for r in self._routes if r.owner != owner]

    def replace_routes(self, owner: str, routes: list[_Route]) -> None:
        """Swap an owner's routes for `routes` in one step (a reloaded webhook trigger): no
        request sees the path missing in between."""
        kept = [r for r in self._routes if r.owner != owner]
        self._routes = sorted([*kept, *routes], key=_Route.specificity)

    def hold(self, owner: str, handler: HttpHandler) -> None:
        """Keep an owner's paths with `handler` answering them (a paused trigger's 503), so
        they never answer 404, which senders take as permanent."""
        self._routes = [
            r if r.owner != owner else _Route(r.method, r.template, handler, owner)
            for r in self._routes
        ]

    def owners(self) -> set[str]:
        return {r.owner for r in self._routes}

    def match(self, method: str, path: str) -> tuple[HttpHandler, RouteMatch] | bool | None:
        """(handler, match); False when the path exists for other methods; None otherwise.
        `path` is the raw (still percent-encoded) path, so that an encoded `/` stays inside
        one segment; parameters are decoded once."""
        parts = split_path(path)
        path_known = False
        for r in self._routes:
            params = r.template.match_parts(parts)
            if params is None:
                continue
            if r.method in (method, "ANY"):
                if params:
                    params = decode_params(params)
                return r.handler, RouteMatch(r.method, r.template.text, params)
            path_known = True
        return False if path_known else None

    def __len__(self) -> int:
        return len(self._routes)


class TriggerMount:
    """One trigger's view of the route table (implements triggerd.types.HttpMount), so the
    daemon can restart the trigger without the path answering 404 in between.

    `staged`: routes added are checked but held back until `commit()` puts them in the table
    in place of the owner's current ones. `detach()`: the source's `remove_routes` at its
    stop leaves the routes in the table (its replacement's `commit()` swaps them)."""

    def __init__(self, routes: Routes, owner: str, *, staged: bool = False) -> None:
        self.routes = routes
        self.owner = owner
        self._staged: list[_Route] | None = [] if staged else None
        self._detached = False

    def add_route(self, method: str, template: str, handler: HttpHandler, *, owner: str) -> None:
        if self._staged is None:
            self.routes.add_route(method, template, handler, owner=self.owner)
            return
        route = self.routes._checked(method, template, handler, self.owner, self.owner)
        for r in self._staged:
            if r.method == route.method and r.template.shape == route.template.shape:
                raise ValueError(f"route {route.method} {template} is already served by {owner}")
        self._staged.append(route)

    def remove_routes(self, owner: str) -> None:
        if self._staged is not None:
            self._staged.clear()
        elif not self._detached:
            self.routes.remove_routes(self.owner)

    def detach(self) -> None:
        self._detached = True

    def commit(self) -> None:
        """Put the staged routes in the table in place of the owner's (none: remove them)."""
        staged, self._staged = self._staged, None
        if staged is not None:
            self.routes.replace_routes(self.owner, staged)
