"""A function's backend with its invocations in flight counted, so a reload that replaces
the function stops the old backend only once they finished (its triggers drain first; the
Invoke API and synchronous webhooks may still be waiting on it)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from triggerd.types import Backend, InvocationType, InvokeResult


class CountedBackend:
    """Implements `Backend` around another one; other attributes are the inner backend's."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        invocation_type: InvocationType = "RequestResponse",
        client_context: str | None = None,
        want_log_tail: bool = False,
        trace_id: str | None = None,
    ) -> InvokeResult:
        self.in_flight += 1
        self._idle.clear()
        try:
            return await self.inner.invoke(
                payload,
                request_id=request_id,
                invocation_type=invocation_type,
                client_context=client_context,
                want_log_tail=want_log_tail,
                trace_id=trace_id,
            )
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no invocation is in flight; False if some still are after `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
