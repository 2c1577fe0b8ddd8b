"""Credentials a local function gets when the daemon has no aiobotocore."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import weakref
from typing import Any

import pytest

from triggerd.functions.backends import local_credentials
from triggerd.functions.backends.local_credentials import CredentialSource
from triggerd.types import BackendContext, SystemClock


def source(environ: dict[str, str]) -> CredentialSource:
    return CredentialSource(
        function="f",
        region="us-east-1",
        clock=SystemClock(),
        log=logging.getLogger("triggerd.test"),
        timeout_s=3,
        environ=environ,
    )


async def test_without_aiobotocore_a_named_profile_is_a_warning_not_silence(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(local_credentials, "_aiobotocore_session", lambda: None)
    await source({"AWS_PROFILE": "prod"}).start()
    warned = [r for r in caplog.records if r.getMessage() == "backend.credentials_unresolved"]
    assert len(warned) == 1 and "triggerd-daemon[aws]" in warned[0].__dict__["reason"]


async def test_without_aiobotocore_plain_keys_pass_on_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(local_credentials, "_aiobotocore_session", lambda: None)
    creds = source({"AWS_PROFILE": "p", "AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s"})
    await creds.start()
    assert "backend.credentials_unresolved" not in caplog.text
    assert creds.env()["AWS_ACCESS_KEY_ID"] == "AKIA1"


class _CountingChain:
    """Stands in for the credentials chain: counts its starts."""

    def __init__(self) -> None:
        self.started = 0

    async def start(self) -> None:
        self.started += 1


def _backend(ready: asyncio.Event | None) -> tuple[Any, _CountingChain]:
    from triggerd.functions.backends.local import LocalBackend, LocalFunctionConfig

    ctx = BackendContext("f", SystemClock(), logging.getLogger("triggerd.test"), daemon_ready=ready)
    backend = LocalBackend(LocalFunctionConfig(handler="app.handler", code="."), ctx)
    chain = _CountingChain()
    backend.credentials = chain  # type: ignore[assignment]
    return backend, chain


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_the_chain_is_resolved_once_the_daemon_is_ready_not_during_its_start() -> None:
    ready = asyncio.Event()
    backend, chain = _backend(ready)
    task = asyncio.create_task(backend._start_credentials(later=True))
    await _turns()
    assert chain.started == 0  # aiobotocore's import would delay the start
    ready.set()
    await asyncio.wait_for(task, 5)
    assert chain.started == 1


async def test_a_worker_starting_before_the_daemon_is_ready_gets_the_chain_at_once() -> None:
    backend, chain = _backend(asyncio.Event())  # never set: a provisioned worker at start
    backend._credentials = asyncio.create_task(backend._start_credentials(later=True))
    await _turns()
    assert chain.started == 0
    await asyncio.wait_for(backend._credentials_started(), 5)
    assert chain.started == 1 and backend._credentials is None


async def test_without_a_daemon_the_chain_starts_at_once() -> None:
    backend, chain = _backend(None)  # `triggerd invoke`, tests
    await asyncio.wait_for(backend._start_credentials(later=True), 5)
    assert chain.started == 1


class _Frozen:
    def __init__(self, access_key: str) -> None:
        self.access_key = access_key
        self.secret_key = "secret-" + access_key
        self.token = None


class _FakeChain:
    """aiobotocore's credentials object: the keys it holds now."""

    def __init__(self, access_key: str) -> None:
        self.access_key = access_key

    async def get_frozen_credentials(self) -> _Frozen:
        return _Frozen(self.access_key)


class _FakeSession:
    """Stands in for aiobotocore's session: counts the chain's resolutions; `fail` makes the
    next one raise (a malformed profile, say); `keys`: what the chain finds (None: nothing)."""

    def __init__(self) -> None:
        self.resolved = 0
        self.fail = False
        self.keys: str | None = None

    async def get_credentials(self) -> _FakeChain | None:
        self.resolved += 1
        await asyncio.sleep(0.01)  # the instance metadata service answering
        if self.fail:
            self.fail = False
            raise ValueError("malformed profile")
        return None if self.keys is None else _FakeChain(self.keys)


async def _lookup_under_way(session: _FakeSession) -> None:
    """Until the shared lookup asks the (fake) chain."""
    async with asyncio.timeout(5):
        while session.resolved == 0:
            await asyncio.sleep(0.001)


@pytest.fixture
def fake_session(monkeypatch: pytest.MonkeyPatch) -> _FakeSession:
    session = _FakeSession()
    monkeypatch.setattr(local_credentials, "_aiobotocore_session", lambda: session)
    monkeypatch.setattr(local_credentials, "_shared", None)
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    return session


async def test_the_daemon_s_chain_is_resolved_once_for_every_function(
    fake_session: _FakeSession,
) -> None:
    fake_session.keys = "AKIASHARED"
    sources = [source({}) for _ in range(5)]
    await asyncio.gather(*(s.start() for s in sources))
    later = source({})
    await later.start()  # a function started later
    assert fake_session.resolved == 1
    assert all(s.env()["AWS_ACCESS_KEY_ID"] == "AKIASHARED" for s in [*sources, later])
    # Renewal goes through the shared chain: each function sees the new keys.
    assert local_credentials._shared is not None
    chain = await local_credentials._shared[2]
    chain[1].access_key = "AKIARENEWED"
    generations = [s.generation for s in sources]
    for s in sources:
        await s.refresh(force=True)
    assert all(s.env()["AWS_ACCESS_KEY_ID"] == "AKIARENEWED" for s in sources)
    assert [s.generation for s in sources] == [g + 1 for g in generations]


async def test_other_aws_variables_or_home_resolve_the_chain_again(
    fake_session: _FakeSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await source({}).start()
    monkeypatch.setenv("AWS_PROFILE", "other")
    await source({}).start()
    monkeypatch.setenv("HOME", "/elsewhere")  # another ~/.aws
    await source({}).start()
    assert fake_session.resolved == 3


async def test_a_reload_forgets_the_chain_and_finds_credentials_written_since(
    fake_session: _FakeSession,
) -> None:
    before = source({})
    await before.start()
    assert before.env() == {}  # nothing anywhere when the daemon started
    fake_session.keys = "AKIAWRITTENLATER"  # `aws configure`, an SSO login
    local_credentials.forget_daemon_chain()
    after = source({})
    await after.start()
    assert fake_session.resolved == 2
    assert after.env()["AWS_ACCESS_KEY_ID"] == "AKIAWRITTENLATER"


async def test_a_failed_resolution_is_not_kept(fake_session: _FakeSession) -> None:
    fake_session.fail = True
    with pytest.raises(ValueError, match="malformed profile"):
        await source({}).start()
    await source({}).start()  # tries again, and gets there
    assert fake_session.resolved == 2


async def test_a_waiter_cancelled_does_not_cancel_the_resolution_the_others_wait_for(
    fake_session: _FakeSession,
) -> None:
    first = asyncio.create_task(source({}).start())
    waiting = asyncio.create_task(source({}).start())
    await _lookup_under_way(fake_session)
    first.cancel()
    await asyncio.wait_for(waiting, 5)
    assert first.cancelled() and fake_session.resolved == 1
    assert local_credentials._shared is not None
    assert not local_credentials._shared[2].cancelled()


async def test_a_caller_cancelled_as_the_resolution_is_cancelled_stays_cancelled(
    fake_session: _FakeSession,
) -> None:
    caller = asyncio.create_task(source({}).start())
    await _lookup_under_way(fake_session)
    assert local_credentials._shared is not None
    local_credentials._shared[2].cancel()  # the daemon's stop cancels its tasks
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 5)  # not swallowed by resolving again


async def test_a_waiter_whose_resolution_is_cancelled_resolves_again(
    fake_session: _FakeSession,
) -> None:
    waiting = asyncio.create_task(source({}).start())
    await asyncio.sleep(0)
    assert local_credentials._shared is not None
    local_credentials._shared[2].cancel()  # the resolution cancelled, not its waiter
    await asyncio.wait_for(waiting, 5)  # which resolves again instead of failing
    assert fake_session.resolved == 1  # the first was cancelled before it asked
    assert not local_credentials._shared[2].cancelled()


async def test_a_cancelled_resolution_is_not_handed_to_the_next_function(
    fake_session: _FakeSession,
) -> None:
    only = asyncio.create_task(source({}).start())
    await _lookup_under_way(fake_session)
    only.cancel()  # its only waiter gone first
    assert local_credentials._shared is not None
    cancelled = local_credentials._shared[2]
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    await asyncio.wait_for(source({}).start(), 5)
    assert fake_session.resolved == 2
    assert local_credentials._shared[2] is not cancelled


async def test_a_resolution_that_failed_unseen_is_not_handed_on(
    fake_session: _FakeSession,
) -> None:
    fake_session.fail = True
    first = asyncio.create_task(source({}).start())
    await asyncio.sleep(0)
    first.cancel()  # its only waiter gone before it failed
    assert local_credentials._shared is not None
    failed = local_credentials._shared[2]
    with contextlib.suppress(ValueError):
        await failed
    await asyncio.wait_for(source({}).start(), 5)
    assert fake_session.resolved == 2


def test_each_event_loop_resolves_its_own_chain_and_keeps_no_other(
    fake_session: _FakeSession,
) -> None:
    # A resolution's task belongs to its loop: another loop (a test's, a second run) cannot
    # await it, and a finished loop is not kept alive by the one kept.
    asyncio.run(source({}).start())
    first = local_credentials._shared
    assert first is not None
    first_loop = weakref.ref(first[0])
    del first
    asyncio.run(source({}).start())
    assert fake_session.resolved == 2
    gc.collect()
    assert first_loop() is None  # the finished loop is not kept
