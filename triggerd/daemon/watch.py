"""Hot reload (`triggerd run --watch`): a change to a local function's code, requirements or
layers recycles that function's workers, as `serverless-offline --reloadHandler` and SAM's
warm containers do.

watchfiles (the `directory` extra) watches every path the functions' backends name
(`watched_paths`); its default filter drops `__pycache__`, `.pyc` files, `.git`,
`node_modules` and editor temp files (`.swp`, `~`, `.#...`). A change is handed to the
backend's `reload_code`, which retires idle workers at once and busy ones after their
invocation; one log line per function per reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from triggerd.config.plugins import import_extra

log = logging.getLogger("triggerd.watch")

#: watchfiles groups changes for at most this long (ms) and yields once none came for
#: STEP_MS: a save is picked up within about a tenth of a second.
DEBOUNCE_MS = 400
STEP_MS = 50


@runtime_checkable
class ReloadsCode(Protocol):
    """A backend whose function is built from local files (the `local` backend)."""

    def watched_paths(self) -> list[str]: ...

    async def reload_code(self, changed: Collection[str] = ()) -> int: ...


def require_watchfiles() -> None:
    """MissingExtraError naming the extra when watchfiles is not installed."""
    import_extra("watchfiles", "directory", "--watch")


def reloadable(backends: Mapping[str, Any]) -> dict[str, ReloadsCode]:
    """The backends (under their wrappers) that can reload their code, by function name."""
    out: dict[str, ReloadsCode] = {}
    for name, backend in backends.items():
        inner = backend
        while not isinstance(inner, ReloadsCode) and hasattr(inner, "inner"):
            inner = inner.inner
        if isinstance(inner, ReloadsCode):
            out[name] = inner
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def functions_changed(roots: Mapping[str, Collection[str]], changed: Iterable[str]) -> set[str]:
    """The functions one of whose watched paths holds (or is) a changed path."""
    paths = [os.path.abspath(p) for p in changed]
    return {
        name for name, watched in roots.items() if any(_under(p, r) for r in watched for p in paths)
    }


#: How often (s) the watcher compares the paths the functions are built from with those it
#: watches: a reload (SIGHUP) may add a function or point one at other code, and a path
#: missing at start may appear; the watch then starts again on the new set.
REWATCH_CHECK_S = 1.0


def _roots(backends: Callable[[], Mapping[str, Any]]) -> dict[str, list[str]]:
    return {name: b.watched_paths() for name, b in reloadable(backends()).items()}


def _existing(roots: Mapping[str, Collection[str]]) -> list[str]:
    return sorted({p for paths in roots.values() for p in paths if os.path.exists(p)})


async def watch_functions(backends: Callable[[], Mapping[str, Any]], stop: asyncio.Event) -> None:
    """Until `stop`: reload each function whose files changed. `backends()` gives the
    daemon's current backends by function name (looked up again at every change, so a
    function replaced by a config reload is the one recycled); the paths watched follow
    the functions' (checked every REWATCH_CHECK_S)."""
    while not stop.is_set():
        roots = _roots(backends)
        watched = await asyncio.to_thread(_existing, roots)
        if watched:
            log.info("watch.started", extra={"functions": sorted(roots), "paths": watched})
        else:
            log.warning("watch.nothing_to_watch", extra={"functions": sorted(roots)})
        moved = asyncio.Event()  # set at stop, or when the paths to watch change
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_follow(backends, roots, watched, stop, moved))
            if watched:
                await _watch(backends, roots, watched, moved)
            else:
                await moved.wait()


async def _follow(
    backends: Callable[[], Mapping[str, Any]],
    roots: Mapping[str, Collection[str]],
    watched: list[str],
    stop: asyncio.Event,
    moved: asyncio.Event,
) -> None:
    """Set `moved` at `stop`, or once the functions' paths (or which of them exist) differ
    from `roots` / `watched`."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REWATCH_CHECK_S)
            break
        now = _roots(backends)
        if now != roots or await asyncio.to_thread(_existing, now) != watched:
            log.info("watch.paths_changed", extra={"functions": sorted(now)})
            break
    moved.set()


async def _watch(
    backends: Callable[[], Mapping[str, Any]],
    roots: Mapping[str, Collection[str]],
    watched: list[str],
    moved: asyncio.Event,
) -> None:
    from watchfiles import DefaultFilter, awatch

    async for changes in awatch(
        *watched,
        watch_filter=DefaultFilter(),
        stop_event=moved,
        debounce=DEBOUNCE_MS,
        step=STEP_MS,
        recursive=True,
        ignore_permission_denied=True,
    ):
        changed = {path for _, path in changes}
        current = reloadable(backends())
        for name in sorted(functions_changed(roots, changed)):
            backend = current.get(name)
            if backend is None:
                continue
            files = sorted(p for p in changed if any(_under(p, r) for r in roots[name]))
            await _reload(name, backend, files)


async def _reload(name: str, backend: ReloadsCode, files: list[str]) -> None:
    try:
        retired = await backend.reload_code(files)
    except Exception as e:  # task boundary: keep watching
        log.error("function.reload_failed", extra={"function": name, "error": repr(e)})
        return
    log.info(
        "function.code_reloaded",
        extra={
            "function": name,
            "changed": files[:5],
            "changed_files": len(files),
            "idle_workers_retired": retired,
        },
    )
