"""Prometheus metrics, one registry per daemon (no module-level collectors)."""

from __future__ import annotations

import bisect
import platform
from collections.abc import Callable, Iterator
from functools import cached_property

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import disable_created_metrics as _disable_created
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from triggerd import __version__
from triggerd.telemetry.spans import NoTracer, Tracer
from triggerd.types import SourceStats

#: prometheus_client's switch for `_created` series (untyped there).
disable_created_metrics: Callable[[], None] = _disable_created
#: prometheus_client's own `le` formatting (untyped there).
_le: Callable[[float], str] = floatToGoString

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
INIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Async event age at invoke: from queued to invoked (seconds up to Lambda's 6 hours).
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 21600)
#: Per trigger, at most this many partitions get their own lag series (the most lagging ones):
#: a topic of thousands of partitions must not give thousands of series. The per-trigger
#: iterator age and offset lag cover every partition.
MAX_PARTITION_SERIES = 50


class Buckets:
    """A histogram's counts as plain numbers."""

    __slots__ = ("bounds", "counts", "labels", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.labels = [_le(bound) for bound in bounds]
        #: Observations per bucket (not cumulative); the last one is +Inf.
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(self.labels, self.counts, strict=False):
            running += count
            out.append((label, running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class FunctionTally:
    """One function's invocation figures. Updated on every invocation from the event loop,
    so plain numbers rather than prometheus_client's locked values: they become metric
    families only when /metrics is scraped."""

    __slots__ = ("cold_starts", "duration", "gb_seconds", "init_duration", "max_memory")

    def __init__(self) -> None:
        self.duration = Buckets(DURATION_BUCKETS)
        self.init_duration = Buckets(INIT_BUCKETS)
        self.cold_starts = 0
        self.gb_seconds = 0.0
        #: Bytes, of the last invocation.
        self.max_memory: float | None = None


class FunctionMetrics(Collector):
    """The local backend's per-function metrics (`triggerd_function_*`), collected from the
    tallies. Invocations are counted once, for every backend, by `triggerd_invocations`."""

    def __init__(self) -> None:
        self._tallies: dict[str, FunctionTally] = {}

    def tally(self, function: str) -> FunctionTally:
        return self._tallies.setdefault(function, FunctionTally())

    def collect(self) -> Iterator[Metric]:
        tallies = sorted(self._tallies.items())
        duration = HistogramMetricFamily(
            "triggerd_function_duration_seconds",
            "Function run time as reported in REPORT lines",
            labels=["function"],
        )
        init = HistogramMetricFamily(
            "triggerd_function_init_duration_seconds",
            "Cold-start init duration",
            labels=["function"],
        )
        cold = CounterMetricFamily(
            "triggerd_function_cold_starts", "Execution environments started", labels=["function"]
        )
        billed = CounterMetricFamily(
            "triggerd_function_billed_gb_seconds",
            "Billed duration x memory, as Lambda would bill it",
            labels=["function"],
        )
        memory = GaugeMetricFamily(
            "triggerd_function_max_memory_bytes",
            "Max memory used by the last invocation",
            labels=["function"],
        )
        for name, t in tallies:
            duration.add_metric([name], t.duration.cumulative(), t.duration.total)
            init.add_metric([name], t.init_duration.cumulative(), t.init_duration.total)
            cold.add_metric([name], t.cold_starts)
            billed.add_metric([name], t.gb_seconds)
            if t.max_memory is not None:
                memory.add_metric([name], t.max_memory)
        yield from (duration, init, cold, billed, memory)


class InvokeTally:
    """One function's invocations as triggerd sees them, whatever backend runs it: plain
    numbers updated from the event loop on every invocation (prometheus_client's values take
    a lock for each update), made metric families only when /metrics is scraped."""

    __slots__ = ("concurrent", "duration", "outcomes")

    def __init__(self) -> None:
        #: Invocations in progress (including those waiting for a free worker).
        self.concurrent = 0
        self.duration = Buckets(DURATION_BUCKETS)
        #: Invocations by outcome (`Outcome.value`).
        self.outcomes: dict[str, int] = {}

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class InvokeMetrics(Collector):
    """`triggerd_invocations`, `triggerd_invoke_duration_seconds` and
    `triggerd_concurrent_executions`, collected from each function's `InvokeTally`."""

    def __init__(self) -> None:
        self._tallies: dict[str, InvokeTally] = {}

    def tally(self, function: str) -> InvokeTally:
        """The function's tally (the same one for a function reloaded under its name)."""
        return self._tallies.setdefault(function, InvokeTally())

    def collect(self) -> Iterator[Metric]:
        invocations = CounterMetricFamily(
            "triggerd_invocations",
            "Function invocations by outcome (ok, function_error, timeout, throttled, "
            "invoke_error), whatever invoked them",
            labels=["function", "outcome"],
        )
        seconds = HistogramMetricFamily(
            "triggerd_invoke_duration_seconds",
            "Invocation latency as seen by triggerd",
            labels=["function"],
        )
        concurrent = GaugeMetricFamily(
            "triggerd_concurrent_executions",
            "Invocations in progress (including those waiting for a free worker)",
            labels=["function"],
        )
        for name, t in sorted(self._tallies.items()):
            for outcome, count in sorted(t.outcomes.items()):
                invocations.add_metric([name, outcome], count)
            seconds.add_metric([name], t.duration.cumulative(), t.duration.total)
            concurrent.add_metric([name], t.concurrent)
        yield from (invocations, seconds, concurrent)


class SourceMetrics(Collector):
    """Lag per partition, committed offsets and rebalances of the sources that report them
    (`ReportsStats`), read from the sources when /metrics is scraped."""

    def __init__(self) -> None:
        self._providers: dict[str, Callable[[], SourceStats]] = {}

    def register(self, trigger: str, stats: Callable[[], SourceStats]) -> None:
        self._providers[trigger] = stats

    def unregister(self, trigger: str) -> None:
        """A trigger stopped (removed or paused by a reload)."""
        self._providers.pop(trigger, None)

    def snapshot(self) -> dict[str, SourceStats]:
        return {trigger: stats() for trigger, stats in sorted(self._providers.items())}

    def collect(self) -> Iterator[Metric]:
        labels = ["trigger", "partition"]
        lag = GaugeMetricFamily(
            "triggerd_source_lag_records",
            "Records between the committed position and the end of the partition",
            labels=labels,
        )
        lag_s = GaugeMetricFamily(
            "triggerd_source_lag_seconds",
            "Age of the oldest record of the partition not processed yet",
            labels=labels,
        )
        committed = GaugeMetricFamily(
            "triggerd_source_committed_offset", "Last committed offset", labels=labels
        )
        lag_bytes = GaugeMetricFamily(
            "triggerd_source_lag_bytes",
            "Bytes between the committed position and the end (WAL behind a replication slot)",
            labels=labels,
        )
        retained = GaugeMetricFamily(
            "triggerd_source_retained_bytes",
            "Bytes the server keeps for this reader (WAL retained by a replication slot)",
            labels=labels,
        )
        rebalances = CounterMetricFamily(
            "triggerd_source_rebalances",
            "Partition assignments (rebalances) since the source started",
            labels=["trigger"],
        )
        iterator_age = GaugeMetricFamily(
            "triggerd_source_iterator_age_seconds",
            "Age of the oldest record not processed yet, over all partitions (IteratorAge)",
            labels=["trigger"],
        )
        offset_lag = GaugeMetricFamily(
            "triggerd_source_offset_lag_records",
            "Records behind, summed over the partitions that report it (OffsetLag)",
            labels=["trigger"],
        )
        for trigger, stats in self.snapshot().items():
            rebalances.add_metric([trigger], stats.rebalances)
            iterator_age.add_metric(
                [trigger], max((p.lag_seconds for p in stats.partitions), default=0.0)
            )
            counted = [p.lag_records for p in stats.partitions if p.lag_records is not None]
            if counted:
                offset_lag.add_metric([trigger], sum(counted))
            worst = sorted(stats.partitions, key=lambda p: p.lag_seconds, reverse=True)
            for p in sorted(worst[:MAX_PARTITION_SERIES], key=lambda p: p.partition):
                if p.lag_records is not None:
                    lag.add_metric([trigger, p.partition], p.lag_records)
                lag_s.add_metric([trigger, p.partition], p.lag_seconds)
                if p.committed_offset is not None:
                    committed.add_metric([trigger, p.partition], p.committed_offset)
                if p.lag_bytes is not None:
                    lag_bytes.add_metric([trigger, p.partition], p.lag_bytes)
                if p.retained_bytes is not None:
                    retained.add_metric([trigger, p.partition], p.retained_bytes)
        yield from (lag, lag_s, committed, lag_bytes, retained, rebalances)
        yield from (iterator_age, offset_lag)


class TriggerTally:
    """One trigger's series of the poll pipeline's metrics, each labelled on its first use (so
    a series appears when first counted, as with `labels()` at every use) and kept: the
    pipeline counts once per batch, and `labels()` is a look-up under a lock."""

    def __init__(self, metrics: Metrics, trigger: str) -> None:
        self._metrics = metrics
        self._trigger = trigger

    @cached_property
    def received(self) -> Counter:
        return self._metrics.records_received.labels(self._trigger)

    @cached_property
    def filtered(self) -> Counter:
        return self._metrics.records_filtered.labels(self._trigger)

    @cached_property
    def succeeded(self) -> Counter:
        return self._metrics.records_succeeded.labels(self._trigger)

    @cached_property
    def retried(self) -> Counter:
        return self._metrics.records_retried.labels(self._trigger)

    @cached_property
    def inflight(self) -> Gauge:
        return self._metrics.inflight.labels(self._trigger)


class Metrics:
    """The daemon's telemetry: its Prometheus registry (every metric is listed, with its
    CloudWatch counterpart, in docs/metrics.md) and the tracer that makes spans (a no-op one
    unless [telemetry.otel] is configured)."""

    def __init__(self) -> None:
        # prometheus_client's switch is process-wide; a `_created` series per counter would
        # double the series count and no dashboard reads them.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.tracer: Tracer = NoTracer()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "triggerd_build_info",
            "1, labelled with triggerd's version and the Python it runs on",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.eventbridge_entries = Counter(
            "triggerd_eventbridge_entries",
            "PutEvents entries by bus (unknown for a bus not declared) and outcome (accepted, "
            "or the entry's ErrorCode)",
            ["bus", "outcome"],
            registry=r,
        )
        self.eventbridge_matched = Counter(
            "triggerd_eventbridge_matched_events",
            "Events a rule matched (new and replayed), each queued for every target",
            ["bus", "rule"],
            registry=r,
        )
        self.records_received = Counter(
            "triggerd_records_received", "Records received from sources", ["trigger"], registry=r
        )
        self.records_filtered = Counter(
            "triggerd_records_filtered", "Records dropped by filters", ["trigger"], registry=r
        )
        self.records_succeeded = Counter(
            "triggerd_records_succeeded", "Records delivered", ["trigger"], registry=r
        )
        self.records_retried = Counter(
            "triggerd_records_retried", "Record retries", ["trigger"], registry=r
        )
        self.dead_lettered = Counter(
            "triggerd_records_dead_lettered",
            "Records written to an on-failure destination",
            ["trigger", "condition"],
            registry=r,
        )
        self.discarded = Counter(
            "triggerd_records_dropped",
            "Records given up with no on-failure destination, by reason (RetriesExhausted, "
            "EventAgeExceeded, RetryAttemptsExhausted, RecordAgeExceeded, "
            "MaximumPayloadSizeExceeded, RecordBuildFailed)",
            ["trigger", "reason"],
            registry=r,
        )
        self.destination_failures = Counter(
            "triggerd_destination_delivery_failures",
            "Failed attempts to write a record to an on-failure destination (each is retried)",
            ["trigger", "destination"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "triggerd_async_queue_depth",
            "Events waiting in the async queue",
            ["trigger"],
            registry=r,
        )
        self.event_age = Histogram(
            "triggerd_async_event_age_seconds",
            "Time from an async event's queueing to each invocation of it",
            ["trigger"],
            registry=r,
            buckets=AGE_BUCKETS,
        )
        self.inflight = Gauge(
            "triggerd_inflight_batches", "Batches being invoked", ["trigger"], registry=r
        )
        self.http_refused = Counter(
            "triggerd_http_refused",
            "Requests and connections the listeners refused, by listener and reason",
            ["listener", "reason"],
            registry=r,
        )

        # per function: every invocation (InstrumentedBackend), whatever the backend
        self.invokes = InvokeMetrics()
        r.register(self.invokes)
        # per function, filled in by the backends
        self.functions = FunctionMetrics()
        r.register(self.functions)
        # per source partition, reported by the sources
        self.sources = SourceMetrics()
        r.register(self.sources)

    def trigger_tally(self, trigger: str) -> TriggerTally:
        """The pipeline's series of `trigger`."""
        return TriggerTally(self, trigger)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
