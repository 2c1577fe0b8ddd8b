"""Per-function metrics kept as plain numbers: what /metrics shows must be what
prometheus_client's own Counter/Histogram/Gauge would show for the same observations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from triggerd.telemetry.metrics import DURATION_BUCKETS, Metrics

VALUES = (0.0004, 0.001, 0.0011, 0.003, 0.2, 0.25, 7.0, 30.0, 45.0)


def test_duration_histogram_matches_prometheus_client() -> None:
    metrics = Metrics()
    tally = metrics.functions.tally("fn")
    reference = CollectorRegistry()
    hist = Histogram(
        "triggerd_function_duration_seconds",
        "reference",
        ["function"],
        registry=reference,
        buckets=DURATION_BUCKETS,
    )
    for value in VALUES:
        tally.duration.observe(value)
        hist.labels(function="fn").observe(value)
    name = "triggerd_function_duration_seconds"
    for le in [*(str(float(b)) for b in DURATION_BUCKETS), "+Inf"]:
        labels = {"function": "fn", "le": le}
        ours = metrics.registry.get_sample_value(name + "_bucket", labels)
        assert ours == reference.get_sample_value(name + "_bucket", labels), le
    for suffix in ("_count", "_sum"):
        ours = metrics.registry.get_sample_value(name + suffix, {"function": "fn"})
        assert ours == reference.get_sample_value(name + suffix, {"function": "fn"})


def test_counters_and_gauge_per_function() -> None:
    metrics = Metrics()
    a, _ = metrics.functions.tally("a"), metrics.functions.tally("b")
    a.cold_starts += 2
    a.gb_seconds += 0.125
    a.max_memory = 50 * 1024 * 1024

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("triggerd_function_cold_starts_total", function="a") == 2
    assert value("triggerd_function_billed_gb_seconds_total", function="a") == 0.125
    assert value("triggerd_function_max_memory_bytes", function="a") == 50 * 1024 * 1024
    assert value("triggerd_function_max_memory_bytes", function="b") is None  # never measured
    text = metrics.exposition().decode()
    assert "# TYPE triggerd_function_duration_seconds histogram" in text
    assert 'triggerd_function_init_duration_seconds_bucket{function="b",le="+Inf"} 0.0' in text
