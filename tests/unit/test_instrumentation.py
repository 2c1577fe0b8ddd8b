"""The one place invocations are counted (InstrumentedBackend), W3C traceparent joined as an
X-Ray header, destination delivery failures counted, and a configured tracer whose extra is
missing refused with one line."""

from __future__ import annotations

import asyncio
import builtins
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeBackend, SteppedClock, fake_registry
from triggerd.config.load import validate_data
from triggerd.daemon.app import Daemon
from triggerd.delivery.onfailure import FAILURE_LOG_EVERY_S, OnFailure
from triggerd.delivery.retry import Backoff
from triggerd.events.tracing import from_traceparent, trace_id_for, xray_ids
from triggerd.telemetry.instrument import InstrumentedBackend
from triggerd.telemetry.metrics import Metrics
from triggerd.telemetry.spans import current_scope, invocation_scope
from triggerd.types import ConfigError, InvokeResult, Outcome

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


async def test_each_invocation_is_counted_once_by_function_and_outcome() -> None:
    metrics = Metrics()
    seen: list[float | None] = []

    def respond(event: Any) -> Any:
        seen.append(value("triggerd_concurrent_executions", function="f"))
        if event.get("throttle"):
            return InvokeResult(Outcome.THROTTLED, b"{}", "")
        if event.get("fail"):
            raise ValueError("boom")
        return {}

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    backend = InstrumentedBackend(FakeBackend(respond), "f", metrics, SteppedClock())
    for payload in (b"{}", b"{}", b'{"fail": 1}', b'{"throttle": 1}'):
        await backend.invoke(payload)
    assert value("triggerd_invocations_total", function="f", outcome="ok") == 2
    assert value("triggerd_invocations_total", function="f", outcome="function_error") == 1
    assert value("triggerd_invocations_total", function="f", outcome="throttled") == 1
    assert value("triggerd_invoke_duration_seconds_count", function="f") == 4
    assert seen == [1.0, 1.0, 1.0, 1.0]  # one execution in progress while each ran
    assert value("triggerd_concurrent_executions", function="f") == 0


async def test_without_a_tracer_the_trace_header_reaches_the_function_unchanged() -> None:
    fake = FakeBackend()
    backend = InstrumentedBackend(fake, "f", Metrics(), SteppedClock())
    header = f"Root=1-{TRACE_ID[:8]}-{TRACE_ID[8:]};Parent={SPAN_ID};Sampled=1"
    await backend.invoke(b"{}", trace_id=header)
    assert fake.trace_ids == [header]
    assert backend.calls == [{}]  # anything else is the wrapped backend's


def test_invocation_scope_is_set_only_inside_its_block() -> None:
    assert current_scope() is None
    with invocation_scope("orders", 3):
        scope = current_scope()
        assert scope is not None and (scope.trigger, scope.attempt) == ("orders", 3)
    assert current_scope() is None


def test_traceparent_becomes_an_x_ray_header() -> None:
    header = from_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-01")
    assert header == f"Root=1-{TRACE_ID[:8]}-{TRACE_ID[8:]};Parent={SPAN_ID};Sampled=1"
    assert xray_ids(header) == (int(TRACE_ID, 16), int(SPAN_ID, 16), True)
    unsampled = from_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-00")
    assert unsampled is not None and unsampled.endswith("Sampled=0")
    # a later version may append fields; version 00 may not
    assert from_traceparent(f"01-{TRACE_ID}-{SPAN_ID}-01-extra") == header


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",
        f"00-{'0' * 32}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",
        "x" * 1000,
    ],
)
def test_malformed_traceparent_is_ignored(value: str | None) -> None:
    assert from_traceparent(value) is None


def test_x_ray_header_wins_over_traceparent_and_a_bad_one_falls_back_to_it() -> None:
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    traceparent = f"00-{TRACE_ID}-{SPAN_ID}-01"
    assert trace_id_for(xray, 0, traceparent) == xray
    assert trace_id_for("garbage", 0, traceparent) == from_traceparent(traceparent)


class _FailingOnce:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.failed = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, record: Any) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("destination down")
        self.sent.append(record)


class _Store:
    async def dlq_add(self, **_: Any) -> None:
        return None


async def test_destination_delivery_failures_are_counted_by_destination_type() -> None:
    metrics = Metrics()
    destination = _FailingOnce()
    on_failure = OnFailure(
        trigger="orders",
        function="f",
        destination=destination,
        destination_name="sqs",
        state=_Store(),  # type: ignore[arg-type]
        clock=SteppedClock(),
        metrics=metrics,
        log=logging.getLogger("test"),
    )
    on_failure.backoff = Backoff(base_s=0.0, max_s=0.0)
    await on_failure.deliver({"r": 1}, "RetriesExhausted", "rid")
    labels = {"trigger": "orders", "destination": "sqs"}
    get = metrics.registry.get_sample_value
    assert get("triggerd_destination_delivery_failures_total", labels) == 1
    labels = {"trigger": "orders", "condition": "RetriesExhausted"}
    assert get("triggerd_records_dead_lettered_total", labels) == 1
    assert destination.sent == [{"r": 1}]


class _DownUntilTold:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.down = True

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, record: Any) -> None:
        if self.down:
            raise OSError(30, "Read-only file system")
        self.sent.append(record)


class FailingDestination:
    """An OnFailure for trigger "orders" on `destination` (retrying every millisecond), with
    its deliveries of records {"r": 0..count-1} under way, once they failed `failures`
    times in all (the metric's count)."""

    def __init__(self, destination: Any, name: str, clock: SteppedClock) -> None:
        self.metrics = Metrics()
        self.on_failure = OnFailure(
            trigger="orders",
            function="f",
            destination=destination,
            destination_name=name,
            state=_Store(),  # type: ignore[arg-type]
            clock=clock,
            metrics=self.metrics,
            log=logging.getLogger("test"),
        )
        self.on_failure.backoff = Backoff(base_s=0.001, max_s=0.001)
        self.labels = {"trigger": "orders", "destination": name}

    async def deliveries(self, count: int, failures: int) -> list[asyncio.Future[None]]:
        out = [
            asyncio.ensure_future(self.on_failure.deliver({"r": n}, "RetriesExhausted", f"rid-{n}"))
            for n in range(count)
        ]
        get = self.metrics.registry.get_sample_value
        async with asyncio.timeout(5):
            while (
                get("triggerd_destination_delivery_failures_total", self.labels) or 0
            ) < failures:
                await asyncio.sleep(0.001)
        return out


async def test_a_destination_outage_is_logged_once_not_per_record_and_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, every waiting record logged `destination.failed` at every retry: 40 async events
    # given up on while a file destination was unwritable logged 280 error lines in 47 s (and
    # 1,024 events would log 1,024 lines every 30 s for as long as the outage lasts).
    destination = _DownUntilTold()
    clock = SteppedClock()
    failing = FailingDestination(destination, "file", clock)
    on_failure = failing.on_failure
    caplog.set_level(logging.DEBUG, "test")
    deliveries = await failing.deliveries(20, failures=100)

    def lines(event: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == event]

    [failed] = lines("destination.failed")
    assert failed.levelno == logging.ERROR
    assert failed.__dict__["error"] == "OSError: [Errno 30] Read-only file system"
    assert failed.__dict__["failures"] == 1
    assert on_failure.failing is not None
    clock.offset += FAILURE_LOG_EVERY_S  # a long outage is said again now and then
    async with asyncio.timeout(5):
        while len(lines("destination.failed")) < 2:
            await asyncio.sleep(0.001)
    destination.down = False
    async with asyncio.timeout(5):
        await asyncio.gather(*deliveries)
    assert sorted(r["r"] for r in destination.sent) == list(range(20))
    assert len(lines("destination.failed")) == 2
    [recovered] = lines("destination.recovered")
    assert recovered.__dict__["failures"] >= 100
    assert on_failure.failing is None
    assert len(lines("record.dead_lettered")) == 20


class _FailingTwoWays(_DownUntilTold):
    """Down, with one error for even records and another for odd ones (a flapping network:
    some sends time out, others are refused)."""

    async def send(self, record: Any) -> None:
        if self.down:
            if record["r"] % 2:
                raise ConnectionRefusedError(111, "Connection refused")
            raise TimeoutError("connect timed out")
        self.sent.append(record)


async def test_an_outage_with_two_errors_at_once_is_logged_once_per_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Records waiting at once can fail with different errors. Only the error of the last
    # line was remembered: errors alternating between records logged at every failure again.
    destination = _FailingTwoWays()
    failing = FailingDestination(destination, "sqs", SteppedClock())
    caplog.set_level(logging.DEBUG, "test")
    deliveries = await failing.deliveries(10, failures=100)
    destination.down = False
    async with asyncio.timeout(5):
        await asyncio.gather(*deliveries)
    failed = [r for r in caplog.records if r.getMessage() == "destination.failed"]
    assert sorted(r.__dict__["error"] for r in failed) == [
        "ConnectionRefusedError: [Errno 111] Connection refused",
        "TimeoutError: connect timed out",
    ]
    assert len(destination.sent) == 10


async def test_dropped_records_are_counted_by_reason() -> None:
    metrics = Metrics()
    on_failure = OnFailure(
        trigger="orders",
        function="f",
        destination=None,
        destination_name="none",
        state=_Store(),  # type: ignore[arg-type]
        clock=SteppedClock(),
        metrics=metrics,
        log=logging.getLogger("test"),
    )
    await on_failure.deliver({"r": 1}, "EventAgeExceeded", "rid")
    labels = {"trigger": "orders", "reason": "EventAgeExceeded"}
    assert metrics.registry.get_sample_value("triggerd_records_dropped_total", labels) == 1


def test_otel_settings_keep_headers_secret(tmp_path: Path) -> None:
    data = {
        "telemetry": {
            "otel": {
                "endpoint": "https://otel.example/v1/traces",
                "headers": {"A": "otel-s3cret-value"},
            }
        }
    }
    cfg = validate_data(data, fake_registry(), base_dir=tmp_path)
    otel = cfg.telemetry.otel
    assert otel is not None and otel.service_name == "triggerd"
    assert (
        "otel-s3cret-value" not in repr(cfg)
        and otel.headers["A"].get_secret_value() == "otel-s3cret-value"
    )
    with pytest.raises(ConfigError, match=r"telemetry\.otel\.endpoint"):
        validate_data(
            {"telemetry": {"otel": {"endpoint": "localhost:4318"}}}, fake_registry(), tmp_path
        )


async def test_a_configured_tracer_without_the_extra_is_one_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_otel(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for name in [m for m in __import__("sys").modules if m.startswith("opentelemetry")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    monkeypatch.setattr(builtins, "__import__", no_otel)
    data = {
        "daemon": {"state": f"sqlite:///{tmp_path / 's.db'}", "listen": "", "control_listen": ""},
        "telemetry": {"otel": {"endpoint": "http://127.0.0.1:4318/v1/traces"}},
    }
    reg = fake_registry()
    daemon = Daemon(validate_data(data, reg, base_dir=tmp_path), reg)
    with pytest.raises(ConfigError) as info:
        async with daemon.running():
            pass
    [problem] = info.value.problems
    assert problem.startswith("telemetry.otel: [telemetry.otel] needs opentelemetry")
    assert "pip install 'triggerd-daemon[otel]'" in problem


def test_a_webhook_request_with_only_a_traceparent_joins_that_trace() -> None:
    from triggerd_webhook.events import RequestMeta

    meta = RequestMeta.new("2.0", 1_700_000_000.0, None, f"00-{TRACE_ID}-{SPAN_ID}-01")
    assert meta.trace_id == from_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-01")
    fresh = RequestMeta.new("2.0", 1_700_000_000.0, None, "not a traceparent")
    assert xray_ids(fresh.trace_id) is not None and not fresh.trace_id.endswith("Sampled=1")


@pytest.mark.parametrize(
    ("endpoint", "used"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
        ("https://otel.example/custom/path", "https://otel.example/custom/path"),
    ],
)
def test_an_otel_endpoint_without_a_path_gets_v1_traces(
    tmp_path: Path, endpoint: str, used: str
) -> None:
    data = {"telemetry": {"otel": {"endpoint": endpoint}}}
    otel = validate_data(data, fake_registry(), base_dir=tmp_path).telemetry.otel
    assert otel is not None and otel.endpoint == used
