"""The schedule source: ticks, watermark, catch-up, settlement and event shape."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import pytest
from pydantic import ValidationError

from triggerd.state.base import StateStore
from triggerd.types import ConfigError, MissingExtraError, Record, SourceContext
from triggerd_schedule import ScheduleSourceConfig, plugin
from triggerd_schedule.events import event_id
from triggerd_schedule.source import ScheduleSource

TRIGGER = "nightly-report"


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class FakeClock:
    """Wall and monotonic time advance only when someone sleeps (or the test says so)."""

    def __init__(self, now: str) -> None:
        self.wall = ts(now)
        self.mono = 1000.0
        self.sleeps: list[float] = []
        #: Extra wall-clock seconds added on the next sleep (a suspend or an NTP step).
        self.jump_on_sleep = 0.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.wall += seconds + self.jump_on_sleep
        self.mono += seconds
        self.jump_on_sleep = 0.0
        await asyncio.sleep(0)

    def set(self, now: str) -> None:
        self.wall = ts(now)


class FakeState:
    """Only the checkpoint part of StateStore."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}

    async def get_checkpoint(self, scope: str, key: str) -> str | None:
        return self.data.get(scope, {}).get(key)

    async def set_checkpoints(self, scope: str, items: Mapping[str, str | None]) -> None:
        bucket = self.data.setdefault(scope, {})
        for key, value in items.items():
            if value is None:
                bucket.pop(key, None)
            else:
                bucket[key] = value

    async def list_checkpoints(self, scope: str, prefix: str = "") -> dict[str, str]:
        return {k: v for k, v in self.data.get(scope, {}).items() if k.startswith(prefix)}


class Harness:
    def __init__(self, now: str, watermark: str | None = None, **config: Any) -> None:
        self.clock = FakeClock(now)
        self.state = FakeState()
        if watermark is not None:
            self.state.data[TRIGGER] = {"last_fire": watermark}
        config.setdefault("expression", "rate(1 minute)")
        self.config = ScheduleSourceConfig(type="schedule", **config)
        self.source = self.make()

    def make(self, trigger: str = TRIGGER) -> ScheduleSource:
        ctx = SourceContext(
            trigger=trigger,
            state=cast(StateStore, self.state),
            clock=self.clock,
            log=logging.getLogger("test.schedule"),
        )
        source = plugin.create(self.config, ctx)
        assert isinstance(source, ScheduleSource)
        return source

    async def settle(self, records: list[Record]) -> None:
        """What the pipeline does: commit the checkpoint with the enqueue, then ack."""
        for record in records:
            assert record.checkpoint is not None
            await self.state.set_checkpoints(TRIGGER, record.checkpoint)
        await self.source.ack(records)

    async def restart(self) -> None:
        self.source = self.make()
        await self.source.start()


def times(records: list[Record]) -> list[str]:
    return [r.payload["time"] for r in records]


def skipped_counts(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.__dict__["skipped"] for r in caplog.records if r.getMessage() == "schedule.skipped"]


# --------------------------------------------------------------------------------------------
# first start and waiting


async def test_first_start_fires_no_past_tick() -> None:
    h = Harness("2024-05-01T12:00:10+00:00", expression="cron(0 12 * * ? *)")
    await h.source.start()
    assert await h.source.receive(10, 0) == []
    assert h.source.next_fire == datetime(2024, 5, 2, 12, tzinfo=UTC)


async def test_receive_waits_for_the_next_tick_and_wakes_exactly_on_it() -> None:
    h = Harness("2024-05-01T12:00:30+00:00")
    await h.source.start()
    records = await h.source.receive(10, 120)
    assert times(records) == ["2024-05-01T12:01:00Z"]
    assert h.clock.wall == ts("2024-05-01T12:01:00+00:00")
    assert h.clock.sleeps == [30.0]


async def test_receive_returns_empty_after_the_timeout() -> None:
    h = Harness("2024-05-01T12:00:30+00:00", expression="cron(0 13 * * ? *)")
    await h.source.start()
    assert await h.source.receive(10, 5) == []
    assert h.clock.mono == 1005.0


async def test_long_waits_are_cut_into_capped_sleeps_recomputed_from_the_clock() -> None:
    h = Harness("2024-05-01T12:00:00+00:00", expression="cron(0 13 * * ? *)")
    await h.source.start()
    records = await h.source.receive(10, 7200)
    assert times(records) == ["2024-05-01T13:00:00Z"]
    assert max(h.clock.sleeps) <= 30.0
    assert h.clock.wall == ts("2024-05-01T13:00:00+00:00")  # no drift


async def test_a_wall_clock_jump_during_a_sleep_wakes_at_the_tick() -> None:
    h = Harness("2024-05-01T12:00:00+00:00", expression="cron(0 13 * * ? *)")
    await h.source.start()
    h.clock.jump_on_sleep = 50 * 60  # the machine was suspended for 50 minutes
    records = await h.source.receive(10, 7200)
    assert times(records) == ["2024-05-01T13:00:00Z"]
    # woke by wall-clock time: far less than an hour of monotonic time went by
    assert h.clock.mono - 1000.0 < 11 * 60


async def test_a_backwards_clock_step_does_not_repeat_ticks() -> None:
    h = Harness("2024-05-01T12:00:59+00:00")
    await h.source.start()
    first = await h.source.receive(10, 5)
    assert times(first) == ["2024-05-01T12:01:00Z"]
    await h.settle(first)
    h.clock.set("2024-05-01T11:58:00+00:00")  # NTP steps the clock back 3 minutes
    again = await h.source.receive(10, 300)
    assert times(again) == ["2024-05-01T12:02:00Z"]


# --------------------------------------------------------------------------------------------
# catch-up after downtime


async def test_catch_up_none_skips_missed_ticks_and_counts_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "test.schedule")
    h = Harness("2024-05-01T12:05:30+00:00", watermark="2024-05-01T10:00:00Z", misfire_grace_s=0)
    await h.source.start()
    assert await h.source.receive(10, 0) == []
    assert skipped_counts(caplog) == [125]  # 10:01 .. 12:05
    assert times(await h.source.receive(10, 60)) == ["2024-05-01T12:06:00Z"]


async def test_catch_up_none_still_delivers_a_tick_within_the_misfire_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "test.schedule")
    h = Harness("2024-05-01T12:05:30+00:00", watermark="2024-05-01T10:00:00Z")
    await h.source.start()
    assert times(await h.source.receive(10, 0)) == ["2024-05-01T12:05:00Z"]
    assert skipped_counts(caplog) == [124]


async def test_catch_up_latest_delivers_only_the_most_recent_missed_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "test.schedule")
    h = Harness(
        "2024-05-01T12:30:00+00:00",
        watermark="2024-05-01T08:00:00Z",
        expression="cron(0 * * * ? *)",
        catch_up="latest",
    )
    await h.source.start()
    assert times(await h.source.receive(10, 0)) == ["2024-05-01T12:00:00Z"]
    assert skipped_counts(caplog) == [3]  # 09:00, 10:00, 11:00


async def test_catch_up_all_delivers_every_missed_tick_in_order() -> None:
    h = Harness(
        "2024-05-01T12:05:30+00:00",
        watermark="2024-05-01T11:55:00Z",
        catch_up="all",
        misfire_grace_s=0,
    )
    await h.source.start()
    first = await h.source.receive(4, 0)
    rest = await h.source.receive(100, 0)
    minutes = ["11:56", "11:57", "11:58", "11:59", "12:00", "12:01", "12:02", "12:03", "12:04"]
    assert times(first + rest) == [f"2024-05-01T{t}:00Z" for t in [*minutes, "12:05"]]
    assert len(first) == 4


async def test_catch_up_all_keeps_the_most_recent_max_catch_up_and_logs_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "test.schedule")
    h = Harness(
        "2024-05-01T12:05:30+00:00",
        watermark="2024-05-01T11:55:00Z",
        catch_up="all",
        max_catch_up=3,
        misfire_grace_s=0,
    )
    await h.source.start()
    records = await h.source.receive(100, 0)
    assert times(records) == [
        "2024-05-01T12:03:00Z",
        "2024-05-01T12:04:00Z",
        "2024-05-01T12:05:00Z",
    ]
    assert skipped_counts(caplog) == [7]


async def test_ticks_missed_while_running_follow_the_catch_up_policy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "test.schedule")
    h = Harness("2024-05-01T12:00:30+00:00")
    await h.source.start()
    h.clock.set("2024-05-01T14:00:10+00:00")  # back-pressure or a suspend: 2 hours later
    assert times(await h.source.receive(10, 0)) == ["2024-05-01T14:00:00Z"]
    assert skipped_counts(caplog) == [119]


# --------------------------------------------------------------------------------------------
# never twice


async def test_restart_right_after_a_committed_tick_does_not_fire_it_again() -> None:
    h = Harness("2024-05-01T12:00:59+00:00", catch_up="all")
    await h.source.start()
    records = await h.source.receive(10, 5)
    assert times(records) == ["2024-05-01T12:01:00Z"]
    await h.settle(records)
    await h.restart()  # 12:01:00, well within the misfire grace
    assert await h.source.receive(10, 0) == []
    assert times(await h.source.receive(10, 120)) == ["2024-05-01T12:02:00Z"]


async def test_a_handed_out_tick_is_not_handed_out_again_before_it_is_settled() -> None:
    h = Harness("2024-05-01T12:00:59+00:00")
    await h.source.start()
    first = await h.source.receive(10, 5)
    second = await h.source.receive(10, 90)
    assert times(first) == ["2024-05-01T12:01:00Z"]
    assert times(second) == ["2024-05-01T12:02:00Z"]


async def test_nack_redelivers_the_same_tick_then_ack_ends_it() -> None:
    h = Harness("2024-05-01T12:00:59+00:00")
    await h.source.start()
    first = await h.source.receive(10, 5)
    await h.source.nack(first)
    again = await h.source.receive(10, 0)
    assert [r.item_id for r in again] == [r.item_id for r in first]
    assert again[0].payload == first[0].payload
    await h.settle(again)
    assert h.source.watermark == datetime(2024, 5, 1, 12, 1, tzinfo=UTC)
    await h.source.nack(again)  # a late, stray nack of a settled record changes nothing
    later = await h.source.receive(10, 120)
    assert times(later) == ["2024-05-01T12:02:00Z"]


async def test_a_nacked_tick_older_than_an_acked_one_is_dropped() -> None:
    h = Harness(
        "2024-05-01T12:05:30+00:00",
        watermark="2024-05-01T12:03:00Z",
        catch_up="all",
        misfire_grace_s=0,
    )
    await h.source.start()
    older, newer = await h.source.receive(10, 0)
    await h.settle([newer])
    await h.source.nack([older])
    assert await h.source.receive(10, 0) == []


# --------------------------------------------------------------------------------------------
# the event


async def test_scheduled_event_shape_field_by_field() -> None:
    h = Harness("2024-05-01T12:00:59.250+00:00")
    await h.source.start()
    (record,) = await h.source.receive(10, 5)
    event = record.payload
    assert list(event) == [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ]
    assert event["version"] == "0"
    assert event["id"] == event_id(TRIGGER, datetime(2024, 5, 1, 12, 1, tzinfo=UTC))
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["account"] == "123456789012"
    assert event["time"] == "2024-05-01T12:01:00Z"  # the scheduled time, no millis
    assert event["region"] == "us-east-1"
    assert event["resources"] == [f"arn:aws:events:us-east-1:123456789012:rule/{TRIGGER}"]
    assert event["detail"] == {}
    assert h.source.envelope([record]) is event


async def test_record_fields() -> None:
    h = Harness("2024-05-01T12:00:59+00:00")
    await h.source.start()
    (record,) = await h.source.receive(10, 5)
    assert record.item_id == record.payload["id"]
    assert record.created_at == ts("2024-05-01T12:01:00+00:00")
    assert record.key is None
    assert record.checkpoint == {"last_fire": "2024-05-01T12:01:00Z"}
    assert record.size == len(orjson.dumps(record.payload))


async def test_scheduler_source_name_region_account_and_rule_overrides() -> None:
    h = Harness(
        "2024-05-01T12:00:59+00:00",
        source_name="aws.scheduler",
        rule_name="daily-digest",
        region="eu-central-1",
        account_id="210987654321",
    )
    await h.source.start()
    (record,) = await h.source.receive(10, 5)
    event = record.payload
    assert event["source"] == "aws.scheduler"
    assert event["region"] == "eu-central-1"
    assert event["account"] == "210987654321"
    assert event["resources"] == [
        "arn:aws:scheduler:eu-central-1:210987654321:schedule/default/daily-digest"
    ]


async def test_input_replaces_the_scheduled_event() -> None:
    h = Harness("2024-05-01T12:00:59+00:00", input={"job": "digest", "opts": {"dry": True}})
    await h.source.start()
    (record,) = await h.source.receive(10, 5)
    assert h.source.envelope([record]) == {"job": "digest", "opts": {"dry": True}}
    record.payload["opts"]["dry"] = False  # a record's payload is its own copy
    assert h.config.input == {"job": "digest", "opts": {"dry": True}}
    assert record.checkpoint == {"last_fire": "2024-05-01T12:01:00Z"}


async def test_envelope_refuses_batches() -> None:
    h = Harness("2024-05-01T12:05:30+00:00", watermark="2024-05-01T12:03:00Z", catch_up="all")
    await h.source.start()
    records = await h.source.receive(10, 0)
    with pytest.raises(ValueError, match="alone"):
        h.source.envelope(records)


async def test_tick_ids_are_stable_per_trigger_and_tick() -> None:
    h = Harness("2024-05-01T12:00:59+00:00")
    other = h.make("other-trigger")
    await h.source.start()
    (a,) = await h.source.receive(10, 5)
    h.clock.set("2024-05-01T12:00:59+00:00")
    await h.restart()  # a fresh process computing the same tick
    (b,) = await h.source.receive(10, 5)
    h.clock.set("2024-05-01T12:00:59+00:00")
    await other.start()
    (c,) = await other.receive(10, 5)
    assert a.item_id == b.item_id
    assert a.item_id != c.item_id
    assert times([a, b, c]) == ["2024-05-01T12:01:00Z"] * 3


# --------------------------------------------------------------------------------------------
# config, plugin, sample event


def test_config_defaults_and_invocation() -> None:
    config = ScheduleSourceConfig(type="schedule", expression="rate(5 minutes)")
    assert ScheduleSourceConfig.invocation == "async"
    assert (config.timezone, config.catch_up, config.max_catch_up) == ("UTC", "none", 1000)
    assert config.source_name == "aws.events"
    assert config.rule_name is None and config.input is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expression": "rate(5 minute)"}, r"plural unit .*rate\(5 minutes\)"),
        ({"expression": "cron(0 12 * * MON *)"}, "cannot both be set"),
        ({"expression": "rate(1 minute)", "timezone": "Europe/Nowhere"}, "unknown time zone"),
        ({"expression": "rate(1 minute)", "catch_up": "some"}, "catch_up"),
        ({"expression": "rate(1 minute)", "rule_name": "has space"}, "rule_name"),
        ({"expression": "rate(1 minute)", "account_id": "12"}, "account_id"),
        ({"expression": "rate(1 minute)", "max_catch_up": 0}, "max_catch_up"),
        ({"expression": "rate(1 minute)", "bogus": 1}, "bogus"),
        # Before, each of these was accepted and the trigger never fired, logging only
        # `next_fire: null` in its `schedule.started` line.
        ({"expression": "cron(0 0 30 2 ? *)"}, r"'cron\(0 0 30 2 \? \*\)' never fires"),
        ({"expression": "cron(0 12 31 4,6,9,11 ? *)"}, "never fires"),
        ({"expression": "cron(0 0 ? 2 MON#5 2026)"}, "never fires"),
        ({"expression": "0 0 30 2 *"}, "never fires"),
        ({"expression": "cron(0 0 30 2 ? *)", "timezone": "Europe/Berlin"}, "never fires"),
    ],
)
def test_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScheduleSourceConfig(type="schedule", **fields)


def test_schedules_that_fire_only_on_some_dates_are_accepted() -> None:
    for expression in (
        "cron(0 0 29 2 ? *)",  # leap years
        "cron(0 0 ? 2 MON#5 *)",  # a fifth Monday of February (2016, 2044, ...)
        "cron(0 0 31 2,3 ? *)",
        "0 0 31 2 MON",  # crontab: the 31st or a Monday
        "cron(0 0 1 1 ? 2020)",  # past: its start says it will not fire again (below)
        "cron(0 0 L 2 ? *)",
        "cron(0 0 31W * ? *)",  # months of 31 days only
        "cron(0 0 1W 2 ? *)",
        "cron(0 0 LW * ? *)",
        "cron(0 0 ? * 6L *)",
        "cron(0 0 ? 2 1#5 *)",  # a fifth Sunday of February (2032, ...)
        "cron(0 0 29 2 ? 2025-2028)",  # 2028 only
        "cron(0 0 1 1 ? 2030,2035)",
        "cron(*/5 9-17 ? JAN-MAR MON-FRI *)",
        "cron(0 0 ? * FRI-MON *)",
        "0 0 31 2,4 MON",  # crontab: both day fields restricted, so a Monday suffices
    ):
        ScheduleSourceConfig(type="schedule", expression=expression)
    # Its only local time falls in the spring-forward gap every year: not refused (its
    # start logs that it has no future fire time), as a date rule alone cannot tell.
    ScheduleSourceConfig(
        type="schedule", expression="cron(30 2 ? 3 1L *)", timezone="Europe/Berlin"
    )


async def test_a_schedule_whose_fire_times_are_all_past_says_so_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "test.schedule")
    h = Harness("2024-05-01T12:00:00+00:00", expression="cron(0 0 1 1 ? 2020-2023)")
    await h.source.start()
    assert h.source.next_fire is None
    [line] = [r for r in caplog.records if r.getMessage() == "schedule.no_future_fire"]
    assert line.levelno == logging.WARNING
    assert line.__dict__["expression"] == "cron(0 0 1 1 ? 2020-2023)"
    assert await h.source.receive(10, 0) == []
    caplog.clear()
    h = Harness("2024-05-01T12:00:00+00:00", expression="cron(0 0 1 1 ? 2020-2030)")
    await h.source.start()
    assert not [r for r in caplog.records if r.getMessage() == "schedule.no_future_fire"]


def test_plugin_import_and_config_do_not_load_apscheduler() -> None:
    code = (
        "import sys\n"
        "from triggerd_schedule import plugin\n"
        "plugin.config_model(type='schedule', expression='cron(0 12 ? * 6L *)')\n"
        "plugin.sample_event({})\n"
        "assert 'apscheduler' not in sys.modules, 'apscheduler imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_creating_a_rate_schedule_does_not_import_apschedulers_cron_trigger() -> None:
    """Only cron schedules evaluate with APScheduler: a daemon whose schedules are rates
    does not import it while starting (its presence is still checked, below)."""
    code = (
        "import logging, sys\n"
        "from triggerd.types import SourceContext, SystemClock\n"
        "from triggerd_schedule import plugin\n"
        "config = plugin.config_model(type='schedule', expression='rate(1 minute)')\n"
        "ctx = SourceContext('t', None, SystemClock(), logging.getLogger('t'))\n"
        "print(type(plugin.create(config, ctx)).__name__)\n"
        "print('apscheduler.triggers.cron' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["ScheduleSource", "False"], out.stderr


def test_create_without_apscheduler_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apscheduler.triggers.cron", None)
    h_config = ScheduleSourceConfig(type="schedule", expression="rate(1 minute)")
    ctx = SourceContext(
        trigger=TRIGGER,
        state=cast(StateStore, FakeState()),
        clock=FakeClock("2024-05-01T12:00:00+00:00"),
        log=logging.getLogger("test.schedule"),
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'triggerd-daemon\[schedule\]'"):
        plugin.create(h_config, ctx)


def test_sample_event_defaults_and_options() -> None:
    assert plugin.sample_event is not None
    default = plugin.sample_event({})
    assert default["detail-type"] == "Scheduled Event"
    assert default["time"] == "2024-05-01T12:00:00Z"
    assert default["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/my-schedule"]
    custom = plugin.sample_event(
        {
            "rule": "r1",
            "time": "2025-01-02T03:04:05.678Z",
            "region": "eu-west-1",
            "account": "111122223333",
        }
    )
    assert custom["time"] == "2025-01-02T03:04:05Z"
    assert custom["region"] == "eu-west-1"
    assert custom["account"] == "111122223333"
    assert custom["resources"] == ["arn:aws:events:eu-west-1:111122223333:rule/r1"]
    assert custom["id"] == plugin.sample_event({"rule": "r1", "time": "2025-01-02T03:04:05Z"})["id"]


def test_sample_event_rejects_bad_options_with_a_config_error() -> None:
    assert plugin.sample_event is not None
    with pytest.raises(ConfigError, match="time: 'noon' is not an ISO-8601 time"):
        plugin.sample_event({"time": "noon"})
    with pytest.raises(ConfigError, match=r"source: 'aws\.s3'"):
        plugin.sample_event({"source": "aws.s3"})
