"""Credentials a local function gets when the daemon has no aiobotocore."""

from __future__ import annotations

import asyncio
import logging
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
