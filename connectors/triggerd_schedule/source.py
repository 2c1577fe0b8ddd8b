"""The schedule source: emits one EventBridge "Scheduled Event" per tick.

The watermark is the checkpoint "last_fire" (scope = trigger): the pipeline commits each tick's
value atomically with putting its event on the durable queue, so after a restart no tick is
invoked twice and missed ticks are known. Ticks between the watermark and now are handled by
`catch_up`; a tick is "missed" when it is later than `misfire_grace_s`, whether because the
daemon was down, the machine was suspended, or the pipeline held back.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from triggerd.types import BaseSource, JSONDict, Record, SourceContext
from triggerd_schedule.config import ScheduleSourceConfig
from triggerd_schedule.events import (
    event_id,
    format_time,
    parse_time,
    resource_arn,
    scheduled_event,
)
from triggerd_schedule.expressions import Schedule

CHECKPOINT_KEY = "last_fire"
#: Longest single sleep: the clock is read again after it, so a wall-clock jump (suspend, NTP
#: step) delays a tick by at most this much.
MAX_SLEEP_S = 30.0
#: Most on-time ticks taken in one step (more only with a huge misfire grace).
_ON_TIME_LIMIT = 10_000


@dataclass(slots=True)
class Plan:
    """What to do with the ticks in (cursor, now]."""

    deliver: list[datetime]
    skipped: int


def plan_ticks(
    schedule: Schedule,
    cursor: datetime,
    now: datetime,
    *,
    catch_up: str,
    max_catch_up: int,
    grace: timedelta,
) -> Plan:
    """Split the ticks in (cursor, now] into on-time ones (delivered) and missed ones (per
    `catch_up`). Pure; may be slow after a long gap, so callers run it in a thread."""
    # A tick is missed when it is later than the grace; one exactly that late is on time.
    split = max(cursor, now - grace - timedelta(microseconds=1))
    on_time = schedule.fires_between(split, now, _ON_TIME_LIMIT)
    missed = schedule.count_between(cursor, split) if split > cursor else 0
    if missed == 0:
        return Plan(on_time, 0)
    if catch_up == "all":
        kept = schedule.last_fires(cursor, split, max_catch_up)
    elif catch_up == "latest" and not on_time:
        kept = schedule.last_fires(cursor, split, 1)
    else:
        kept = []
    return Plan(kept + on_time, missed - len(kept))


class ScheduleSource(BaseSource):
    def __init__(
        self, config: ScheduleSourceConfig, ctx: SourceContext, schedule: Schedule
    ) -> None:
        self._config = config
        self._ctx = ctx
        self._schedule = schedule
        self._region = config.region or ctx.region
        self._account = config.account_id or ctx.account_id
        rule = config.rule_name or ctx.trigger
        self._resource = resource_arn(config.source_name, self._region, self._account, rule)
        #: Newest tick acknowledged (or loaded from the checkpoint).
        self._watermark: datetime | None = None
        #: Every tick <= cursor has been planned (queued, handed out or skipped).
        self._cursor: datetime | None = None
        self._next: datetime | None = None
        self._ready: deque[datetime] = deque()
        self._redeliver: list[datetime] = []
        self._inflight: set[datetime] = set()

    # ---- life cycle

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._ctx.clock.time(), UTC)

    def _log_fields(self) -> dict[str, object]:
        return {"trigger": self._ctx.trigger, "expression": self._schedule.expression}

    async def start(self) -> None:
        raw = await self._ctx.state.get_checkpoint(self._ctx.trigger, CHECKPOINT_KEY)
        self._watermark = None
        if raw is not None:
            try:
                self._watermark = parse_time(raw)
            except ValueError:
                self._ctx.log.warning(
                    "schedule.bad_checkpoint", extra={**self._log_fields(), "value": raw}
                )
        now = self._now()
        self._cursor = now if self._watermark is None else self._watermark
        self._next = self._schedule.next_fire(self._cursor)
        if self._next is not None and self._next <= now:
            await self._advance(now)
        if self._next is None:
            # Its fire times are all past (a cron whose years are over): say so, not only
            # `next_fire: null` in the line below.
            self._ctx.log.warning(
                "schedule.no_future_fire", extra={**self._log_fields(), "now": format_time(now)}
            )
        self._ctx.log.info(
            "schedule.started",
            extra={
                **self._log_fields(),
                "watermark": raw,
                "next_fire": None if self._next is None else format_time(self._next),
                "catch_up": self._config.catch_up,
            },
        )

    @property
    def singleton_lease(self) -> str:
        """One daemon of a cluster fires the ticks: the holder of this lease."""
        return f"schedule:{self._ctx.trigger}"

    async def resume(self) -> None:
        """This daemon (again) holds the lease: ticks resume from the stored watermark,
        which another daemon may have moved (the next `receive` reloads it)."""
        self._cursor = self._next = None
        self._ready.clear()
        self._redeliver.clear()
        self._inflight.clear()

    async def _advance(self, now: datetime) -> None:
        """Plan every tick in (cursor, now] and move the cursor to now."""
        assert self._cursor is not None
        cursor = self._cursor
        config = self._config

        def work() -> tuple[Plan, datetime | None]:
            plan = plan_ticks(
                self._schedule,
                cursor,
                now,
                catch_up=config.catch_up,
                max_catch_up=config.max_catch_up,
                grace=timedelta(seconds=config.misfire_grace_s),
            )
            return plan, self._schedule.next_fire(now)

        plan, following = await asyncio.to_thread(work)
        self._ready.extend(plan.deliver)
        self._cursor, self._next = now, following
        if plan.skipped:
            self._ctx.log.warning(
                "schedule.skipped",
                extra={
                    **self._log_fields(),
                    "skipped": plan.skipped,
                    "delivered": len(plan.deliver),
                    "catch_up": config.catch_up,
                    "since": format_time(cursor),
                    "until": format_time(now),
                },
            )

    # ---- receiving

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        if self._cursor is None:
            await self.start()
        clock = self._ctx.clock
        deadline = clock.monotonic() + max(0.0, timeout_s)
        while True:
            now = self._now()
            if self._next is not None and self._next <= now:
                await self._advance(now)
            ticks = self._take(max_records)
            if ticks:
                return [self._record(t) for t in ticks]
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return []
            wait = remaining if self._next is None else (self._next - now).total_seconds()
            await clock.sleep(max(0.0, min(wait, remaining, MAX_SLEEP_S)))

    def _take(self, max_records: int) -> list[datetime]:
        taken: list[datetime] = []
        while len(taken) < max_records:
            if self._redeliver:
                tick = self._redeliver.pop(0)
            elif self._ready:
                tick = self._ready.popleft()
            else:
                break
            if self._watermark is not None and tick <= self._watermark:
                continue  # settled meanwhile: never twice
            self._inflight.add(tick)
            taken.append(tick)
        return taken

    def _record(self, tick: datetime) -> Record:
        item_id = event_id(self._ctx.trigger, tick)
        time = format_time(tick)
        if self._config.input is not None:
            payload: JSONDict = copy.deepcopy(self._config.input)
        else:
            payload = scheduled_event(
                id=item_id,
                source=self._config.source_name,
                account=self._account,
                region=self._region,
                time=time,
                resource=self._resource,
            )
        return Record(
            payload=payload,
            item_id=item_id,
            size=len(orjson.dumps(payload)),
            created_at=tick.timestamp(),
            key=None,
            handle=tick,
            checkpoint={CHECKPOINT_KEY: time},
        )

    # ---- settling

    async def ack(self, records: Sequence[Record]) -> None:
        for record in records:
            tick = record.handle
            if tick not in self._inflight:
                continue
            self._inflight.discard(tick)
            if self._watermark is None or tick > self._watermark:
                self._watermark = tick

    async def nack(self, records: Sequence[Record]) -> None:
        for record in records:
            tick = record.handle
            if tick not in self._inflight:
                continue
            self._inflight.discard(tick)
            if self._watermark is not None and tick <= self._watermark:
                # A later tick was settled first; delivering this one now would move the
                # checkpoint backwards and let that later tick fire again after a restart.
                self._ctx.log.warning(
                    "schedule.skipped",
                    extra={
                        **self._log_fields(),
                        "skipped": 1,
                        "reason": "nacked_after_later_tick_acked",
                        "tick": format_time(tick),
                    },
                )
                continue
            bisect.insort(self._redeliver, tick)

    def envelope(self, records: Sequence[Record]) -> JSONDict:
        """Schedules invoke with the bare event (or the configured input), one per tick."""
        if len(records) != 1:
            raise ValueError(f"a schedule event is invoked alone, got {len(records)} records")
        return records[0].payload

    @property
    def watermark(self) -> datetime | None:
        return self._watermark

    @property
    def next_fire(self) -> datetime | None:
        """The next live tick (after the cursor), for status displays."""
        return self._next
