"""Hot reload's pure parts: which function a changed path belongs to, the backends that can
reload under the daemon's wrappers, and the one line naming the extra when watchfiles is
missing."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Collection
from pathlib import Path

import pytest

from triggerd.daemon import watch
from triggerd.daemon.watch import functions_changed, reloadable, require_watchfiles
from triggerd.types import MissingExtraError


def test_changes_map_to_the_functions_that_own_them(tmp_path: Path) -> None:
    roots = {"a": [str(tmp_path / "a")], "b": [str(tmp_path / "ab"), str(tmp_path / "l.zip")]}
    assert functions_changed(roots, [str(tmp_path / "a" / "x.py")]) == {"a"}
    assert functions_changed(roots, [str(tmp_path / "ab" / "x.py")]) == {"b"}
    assert functions_changed(roots, [str(tmp_path / "l.zip")]) == {"b"}
    assert functions_changed(roots, [str(tmp_path / "c.py")]) == set()


class Reloads:
    def watched_paths(self) -> list[str]:
        return ["/code"]

    async def reload_code(self, changed: Collection[str] = ()) -> int:
        return 0


class Wrapper:
    def __init__(self, inner: object) -> None:
        self.inner = inner


def test_backends_are_found_under_their_wrappers() -> None:
    inner = Reloads()
    found = reloadable({"f": Wrapper(Wrapper(inner)), "remote": Wrapper(object())})
    assert found == {"f": inner}


def test_missing_watchfiles_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)
    with pytest.raises(MissingExtraError, match=r"--watch needs watchfiles: pip install "
                       r"'triggerd-daemon\[directory\]'"):  # fmt: skip
        require_watchfiles()


class Moving:
    """A function whose code a config reload points elsewhere."""

    def __init__(self, code: Path) -> None:
        self.code = code
        self.reloads: list[list[str]] = []
        self.reloaded = asyncio.Event()

    def watched_paths(self) -> list[str]:
        return [str(self.code)]

    async def reload_code(self, changed: Collection[str] = ()) -> int:
        self.reloads.append(list(changed))
        self.reloaded.set()
        return 0


async def save_until_reloaded(path: Path, fn: Moving) -> None:
    """Save `path` until `fn` reloads: the watcher follows new paths within
    REWATCH_CHECK_S, but a save made before it watches them is never reported (a loaded
    machine may take longer than any fixed pause)."""
    async with asyncio.timeout(30):
        while not fn.reloaded.is_set():
            await asyncio.to_thread(path.write_text, f"x = {len(fn.reloads)}\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fn.reloaded.wait(), 0.5)


async def test_paths_a_reload_points_to_are_watched_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "REWATCH_CHECK_S", 0.1)
    old, new, later = tmp_path / "old", tmp_path / "new", tmp_path / "later"
    old.mkdir()
    new.mkdir()
    fn = Moving(old)
    other = Moving(later)  # its code does not exist yet at start
    stop = asyncio.Event()
    task = asyncio.create_task(watch.watch_functions(lambda: {"f": fn, "g": other}, stop))
    try:
        await asyncio.sleep(0.3)
        fn.code = new  # what a reload (SIGHUP) of the config does
        await save_until_reloaded(new / "app.py", fn)
        assert {tuple(r) for r in fn.reloads} == {(str(new / "app.py"),)}
        later.mkdir()
        await save_until_reloaded(later / "app.py", other)
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task
