"""Dynamic HTTP routes: API Gateway templates, most specific first, conflicts, 405s."""

from __future__ import annotations

import pytest
from aiohttp import web

from triggerd.http.routes import RouteMatch, Routes, RouteTemplate, TriggerMount


async def _h(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


def routes(*specs: tuple[str, str]) -> Routes:
    r = Routes()
    for method, template in specs:
        r.add_route(method, template, _h, owner=f"{method} {template}")
    return r


@pytest.mark.parametrize(
    ("method", "path", "template", "params"),
    [
        ("GET", "/orders/42", "/orders/{id}", {"id": "42"}),
        ("GET", "/orders/new", "/orders/new", {}),
        ("POST", "/files/a/b/c.txt", "/files/{proxy+}", {"proxy": "a/b/c.txt"}),
        ("GET", "/orders/a%20b", "/orders/{id}", {"id": "a b"}),
        ("DELETE", "/anything/at/all", "/{proxy+}", {"proxy": "anything/at/all"}),
        ("GET", "/", "/", {}),
    ],
)
def test_most_specific_route_wins(
    method: str, path: str, template: str, params: dict[str, str]
) -> None:
    r = routes(
        ("GET", "/orders/{id}"),
        ("GET", "/orders/new"),
        ("ANY", "/files/{proxy+}"),
        ("ANY", "/{proxy+}"),
        ("GET", "/"),
    )
    found = r.match(method, path)
    assert isinstance(found, tuple)
    assert found[1] == RouteMatch(found[1].method, template, params)


def test_wrong_method_is_distinguished_from_unknown_path() -> None:
    r = routes(("POST", "/hook"))
    assert r.match("GET", "/hook") is False
    assert r.match("POST", "/other") is None


def test_greedy_needs_at_least_one_segment() -> None:
    r = routes(("ANY", "/files/{proxy+}"))
    assert r.match("GET", "/files") is None
    assert r.match("GET", "/files/") is None


@pytest.mark.parametrize("template", ["orders", "/a/{proxy+}/b", "/a/{x", "/a//b"])
def test_bad_templates_are_rejected(template: str) -> None:
    with pytest.raises(ValueError):
        routes(("GET", template))


def test_conflicting_routes_are_rejected_and_owners_removed() -> None:
    r = routes(("GET", "/a/{x}"))
    with pytest.raises(ValueError, match="already served"):
        r.add_route("GET", "/a/{y}", _h, owner="other")
    r.remove_routes("GET /a/{x}")
    r.add_route("GET", "/a/{y}", _h, owner="other")
    assert len(r) == 1


def test_an_encoded_slash_stays_in_one_parameter() -> None:
    r = routes(("GET", "/files/{name}"))
    found = r.match("GET", "/files/a%2Fb%2525")
    assert isinstance(found, tuple)
    assert found[1].params == {"name": "a/b%25"}


def test_a_template_alone_decodes_once_and_keeps_encoded_slashes_in_a_segment() -> None:
    """What the webhook's `generate-event` uses: the table's matcher for one template."""

    def params(template: str, path: str) -> dict[str, str] | None:
        return RouteTemplate.parse(template).match(path)

    assert params("/a/{id}", "/a/x%2Fy") == {"id": "x/y"}
    assert params("/a/{id}", "/a/%2541") == {"id": "%41"}
    assert params("/f/{proxy+}", "/f/a/b%20c") == {"proxy": "a/b c"}
    assert params("/f/{proxy+}", "/f") is None
    assert params("/a/{id}", "/b/1") is None
    assert params("/", "/") == {}


class _Daemon:
    """What the daemon's own routes need of a daemon to be registered."""

    def __init__(self, table: Routes) -> None:
        from triggerd.config.model import DaemonSettings

        self.routes = table
        self.settings = DaemonSettings()


def test_daemon_endpoints_win_over_a_catch_all_webhook() -> None:
    from triggerd.http.server import add_daemon_routes

    table = routes(("ANY", "/{proxy+}"))
    add_daemon_routes(_Daemon(table))  # type: ignore[arg-type]
    health = table.match("GET", "/healthz")
    assert isinstance(health, tuple) and health[1].template == "/healthz"
    invoke = table.match("POST", "/2015-03-31/functions/f%3A1/invocations")
    assert isinstance(invoke, tuple) and invoke[1].params == {"function": "f:1"}
    other = table.match("GET", "/orders/1")
    assert isinstance(other, tuple) and other[1].template == "/{proxy+}"


def test_a_webhook_on_a_daemon_endpoint_is_a_config_error() -> None:
    from triggerd.http.server import add_daemon_routes
    from triggerd.types import ConfigError

    table = routes(("GET", "/metrics"))
    with pytest.raises(ConfigError, match="GET /metrics is the daemon's own endpoint"):
        add_daemon_routes(_Daemon(table))  # type: ignore[arg-type]


def test_without_control_a_listener_serves_healthz_and_no_control_endpoint() -> None:
    from triggerd.http.server import add_daemon_routes

    table = routes(("GET", "/metrics"))  # a webhook may take it: /metrics is on the control side
    add_daemon_routes(_Daemon(table), control=False)  # type: ignore[arg-type]
    assert isinstance(table.match("GET", "/healthz"), tuple)
    for method, path in [
        ("POST", "/2015-03-31/functions/f/invocations"),
        ("GET", "/2015-03-31/functions/"),
        ("GET", "/readyz"),
        ("GET", "/statusz"),
    ]:
        assert table.match(method, path) is None, path
    metrics = table.match("GET", "/metrics")
    assert isinstance(metrics, tuple) and metrics[1].template == "/metrics"


# ---- one trigger's routes, swapped in one step on a restart ----


async def _old(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(text="old")


async def _new(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(text="new")


def test_a_staged_mount_swaps_the_owners_routes_at_commit() -> None:
    routes = Routes()
    old = TriggerMount(routes, "hook")
    old.add_route("POST", "/hook", _old, owner="hook")
    old.detach()
    old.remove_routes("hook")  # the old source stops: its route stays until the swap
    found = routes.match("POST", "/hook")
    assert isinstance(found, tuple) and found[0] is _old
    new = TriggerMount(routes, "hook", staged=True)
    new.add_route("POST", "/hook", _new, owner="hook")  # same path: no conflict with itself
    found = routes.match("POST", "/hook")
    assert isinstance(found, tuple) and found[0] is _old, "not served before the commit"
    new.commit()
    found = routes.match("POST", "/hook")
    assert isinstance(found, tuple) and found[0] is _new
    assert len(routes) == 1


def test_a_staged_mount_still_refuses_another_owners_route() -> None:
    routes = Routes()
    routes.add_route("POST", "/taken", _old, owner="other")
    staged = TriggerMount(routes, "hook", staged=True)
    with pytest.raises(ValueError, match="already served by other"):
        staged.add_route("POST", "/taken", _new, owner="hook")


def test_committing_no_routes_removes_the_old_ones_and_an_attached_mount_removes_its_own() -> None:
    routes = Routes()
    TriggerMount(routes, "hook").add_route("POST", "/hook", _old, owner="hook")
    TriggerMount(routes, "hook", staged=True).commit()
    assert routes.match("POST", "/hook") is None
    mount = TriggerMount(routes, "gone")
    mount.add_route("GET", "/gone", _old, owner="gone")
    mount.remove_routes("gone")
    assert routes.match("GET", "/gone") is None


def test_hold_keeps_an_owners_paths_with_another_handler() -> None:
    from triggerd.http.routes import Routes

    async def serve(request: object) -> object:
        return "served"

    async def paused(request: object) -> object:
        return "paused"

    routes = Routes()
    routes.add_route("POST", "/hook", serve, owner="hook")
    routes.add_route("POST", "/other", serve, owner="other")
    routes.hold("hook", paused)
    held = routes.match("POST", "/hook")
    other = routes.match("POST", "/other")
    assert isinstance(held, tuple) and held[0] is paused
    assert isinstance(other, tuple) and other[0] is serve
    assert routes.match("GET", "/hook") is False, "still its path, for POST only"
