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
#: While a destination keeps failing, `destination.failed` is logged when the outage starts,
#: for each other error, and at most once every this many seconds otherwise (every failure
#: is counted in the metrics): each record waiting for the destination retries on its own.
FAILURE_LOG_EVERY_S = 300.0
#: How many distinct errors of one outage are remembered for that (records waiting at once
#: may fail differently: some sends time out, others are refused); past it, the oldest goes.
FAILURE_ERRORS_KEPT = 16


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
        #: Failed sends of the outage under way, and each error logged during it, with when
        #: (monotonic) it was last logged (at most FAILURE_ERRORS_KEPT, oldest first).
        self._failures = 0
        self._logged: dict[str, float] = {}

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
                break
            except Exception as exc:  # task boundary: any destination failure is retried
                attempt += 1
                delay = self.backoff.delay(attempt)
                self._failed(f"{type(exc).__name__}: {exc}", delay, request_id)
                await asyncio.sleep(delay)
        self._recovered()
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

    def _failed(self, error: str, delay: float, request_id: str) -> None:
        """Count a failed send; log it if it starts an outage, its error was not logged
        during it yet, or that error's last line is FAILURE_LOG_EVERY_S old (not once per
        waiting record and retry)."""
        since = self.failing[0] if self.failing else self.clock.time()
        self.failing = (since, error)
        self._failures += 1
        self.metrics.destination_failures.labels(self.trigger, self.destination_name).inc()
        now = self.clock.monotonic()
        logged = self._logged
        last = logged.pop(error, None)
        if last is not None and now - last < FAILURE_LOG_EVERY_S:
            logged[error] = last
            return
        logged[error] = now
        if len(logged) > FAILURE_ERRORS_KEPT:
            del logged[next(iter(logged))]
        self.log.error(
            "destination.failed",
            extra={
                "trigger": self.trigger,
                "destination": self.destination_name,
                "error": error,
                "retry_in_s": round(delay, 2),
                "request_id": request_id,
                "failures": self._failures,
            },
        )

    def _recovered(self) -> None:
        """A send succeeded: an outage under way is over (said once)."""
        failing, self.failing = self.failing, None
        if failing is None:
            return
        self.log.info(
            "destination.recovered",
            extra={
                "trigger": self.trigger,
                "destination": self.destination_name,
                "failures": self._failures,
                "failing_for_s": round(max(0.0, self.clock.time() - failing[0]), 2),
            },
        )
        self._failures = 0
        self._logged.clear()
