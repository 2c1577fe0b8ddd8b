"""Writing given-up records to a trigger's on-failure destination.

A record is acknowledged upstream only after `OnFailure.deliver` returned, i.e. after the
destination confirmed it. Destination failures are retried with backoff until they succeed
or the trigger stops (then the caller nacks, and the record comes back later).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import orjson

from triggerd.delivery.retry import Backoff
from triggerd.state.base import StateStore
from triggerd.telemetry.metrics import Metrics
from triggerd.types import Clock, Destination, JSONDict

#: After a cancellation (a drain timeout): how long a record under way may still take to reach
#: its destination. Delivered, its records are settled as given up; not, the delivery is
#: cancelled and they are given back with their attempts counted where the path keeps them
#: (the asynchronous queue). With the cancelled delivery's end and the write that follows, within
#: the daemon's grace for cancelled work (`CANCEL_GRACE_S`, 5 s).
DELIVERY_GRACE_S = 2.0
#: How long a cancelled delivery may take to end (it ends at its next await).
DELIVERY_CANCEL_S = 1.0


class OnFailure:
    def __init__(
        self,
        *,
        trigger: str,
        function: str,
        destination: Destination | None,
        destination_name: str,
        state: StateStore,
        clock: Clock,
        metrics: Metrics,
        log: logging.Logger,
    ) -> None:
        self.trigger = trigger
        self.function = function
        self.destination = destination
        self.destination_name = destination_name
        self.state = state
        self.clock = clock
        self.metrics = metrics
        self.log = log
        self.backoff = Backoff(base_s=0.5, max_s=30.0)
        #: While deliveries keep failing: since when (epoch seconds) and the last error, for
        #: /readyz; None once a delivery succeeds.
        self.failing: tuple[float, str] | None = None

    async def start(self) -> None:
        if self.destination is not None:
            await self.destination.start()

    async def stop(self) -> None:
        if self.destination is not None:
            await self.destination.stop()

    async def deliver(
        self,
        record: JSONDict,
        condition: str,
        request_id: str,
        *,
        sent: asyncio.Event | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Write the record to the destination (retrying its failures), index it, and return.
        Without a destination the record is discarded, as Lambda does, and logged. `sent` is
        set once the destination has the record: a caller cancelled during the index write
        that follows knows the record is there (writing it again would be a duplicate).
        `detail`: more fields for the log line that says where the record went (never
        values of the record)."""
        if self.destination is None:
            self.metrics.discarded.labels(self.trigger, condition).inc()
            self.log.warning(
                "record.discarded",
                extra={
                    "trigger": self.trigger,
                    "function": self.function,
                    "condition": condition,
                    "request_id": request_id,
                    **(detail or {}),
                },
            )
            return
        attempt = 0
        while True:
            try:
                await self.destination.send(record)
                self.failing = None
                break
            except Exception as exc:  # task boundary: any destination failure is retried
                attempt += 1
                since = self.failing[0] if self.failing else self.clock.time()
                self.failing = (since, f"{type(exc).__name__}: {exc}")
                delay = self.backoff.delay(attempt)
                self.metrics.destination_failures.labels(self.trigger, self.destination_name).inc()
                self.log.error(
                    "destination.failed",
                    extra={
                        "trigger": self.trigger,
                        "destination": self.destination_name,
                        "error": f"{type(exc).__name__}: {exc}",
                        "retry_in_s": round(delay, 2),
                        "request_id": request_id,
                    },
                )
                await asyncio.sleep(delay)
        if sent is not None:
            sent.set()
        await self.state.dlq_add(
            trigger=self.trigger,
            function=self.function,
            destination=self.destination_name,
            condition=condition,
            created_at=self.clock.time(),
            record=orjson.dumps(record),
        )
        self.metrics.dead_lettered.labels(self.trigger, condition).inc()
        self.log.warning(
            "record.dead_lettered",
            extra={
                "trigger": self.trigger,
                "function": self.function,
                "condition": condition,
                "destination": self.destination_name,
                "request_id": request_id,
                **(detail or {}),
            },
        )
