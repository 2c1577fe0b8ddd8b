"""Prometheus metrics, one registry per daemon (no module-level collectors)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_received = Counter(
            "triggerd_records_received", "Records received from sources", ["trigger"], registry=r
        )
        self.records_filtered = Counter(
            "triggerd_records_filtered", "Records dropped by filters", ["trigger"], registry=r
        )
        self.invocations = Counter(
            "triggerd_invocations",
            "Function invocations by outcome",
            ["trigger", "function", "outcome"],
            registry=r,
        )
        self.invoke_seconds = Histogram(
            "triggerd_invoke_duration_seconds",
            "Invocation latency as seen by triggerd",
            ["function"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
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
            "triggerd_records_discarded",
            "Records given up with no on-failure destination",
            ["trigger", "condition"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "triggerd_async_queue_depth",
            "Events waiting in the async queue",
            ["trigger"],
            registry=r,
        )
        self.inflight = Gauge(
            "triggerd_inflight_batches", "Batches being invoked", ["trigger"], registry=r
        )

        # per function, filled in by the backends
        self.function_invocations = Counter(
            "triggerd_function_invocations",
            "Invocations by function and outcome (ok, function_error, timeout, throttled, "
            "invoke_error)",
            ["function", "outcome"],
            registry=r,
        )
        self.function_duration = Histogram(
            "triggerd_function_duration_seconds",
            "Function run time as reported in REPORT lines",
            ["function"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.function_init_duration = Histogram(
            "triggerd_function_init_duration_seconds",
            "Cold-start init duration",
            ["function"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.function_cold_starts = Counter(
            "triggerd_function_cold_starts",
            "Execution environments started",
            ["function"],
            registry=r,
        )
        self.function_gb_seconds = Counter(
            "triggerd_function_billed_gb_seconds",
            "Billed duration x memory, as Lambda would bill it",
            ["function"],
            registry=r,
        )
        self.function_max_memory = Gauge(
            "triggerd_function_max_memory_bytes",
            "Max memory used by the last invocation",
            ["function"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
