"""The metrics the daemon exposes, their one table in docs/metrics.md and the Grafana dashboard
agree: every metric is documented once with its type and labels, every documented one exists,
and the dashboard queries only metrics that exist (its error rate over invocations CloudWatch
counts). Also: no `_created` series, the build info, and the per-trigger
iterator age / offset lag with bounded per-partition series."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from triggerd import __version__
from triggerd.telemetry.metrics import MAX_PARTITION_SERIES, Metrics
from triggerd.types import PartitionStats, SourceStats

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "docs" / "grafana" / "triggerd.json"
#: The standard collectors, documented as one row each.
STANDARD = ("process_", "python_gc_", "python_info")


def exposed() -> dict[str, str]:
    """Scraped name (counters with `_total`) -> type, for a fresh daemon's registry."""
    text = Metrics().exposition().decode()
    out: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = family.type
    return out


def rows() -> list[tuple[str, str, str]]:
    """(name, type, labels column) of each of the table's rows: the name and each label in
    backquotes, `—` for no labels."""
    found: list[tuple[str, str, str]] = re.findall(
        r"^\| `([a-z_*]+)` \| ([a-z, ]+) \| ([^|]*) \|", DOC.read_text(), re.MULTILINE
    )
    return found


def documented() -> dict[str, str]:
    """Name -> type from the table's rows."""
    return {name: kind for name, kind, _ in rows()}


def documented_labels() -> dict[str, set[str]]:
    """Name -> the label names of its row (`—` for none)."""
    return {name: set(re.findall(r"`([a-z_]+)`", labels)) for name, _, labels in rows()}


def test_no_metric_is_documented_twice() -> None:
    names = [name for name, _, _ in rows()]
    assert len(names) > 20, "the table was not found"
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def populated() -> Metrics:
    """Metrics with a series of every metric: each labelled metric used with the labels its
    row names (prometheus_client refuses label names that are not the metric's own)."""
    metrics = Metrics()
    labels = documented_labels()
    for attribute in vars(metrics).values():
        if not isinstance(attribute, MetricWrapperBase):
            continue
        [family] = attribute.describe()
        name = family.name + "_total" if family.type == "counter" else family.name
        assert name in labels, f"{name} is not documented"
        child = attribute.labels(**dict.fromkeys(labels[name], "x")) if labels[name] else attribute
        if family.type == "counter":
            child.inc()
        elif family.type == "gauge":
            child.set(1)
        else:
            child.observe(1)
    metrics.functions.tally("f").max_memory = 1
    metrics.invokes.tally("x").count("x")
    stats = SourceStats(
        partitions=(
            PartitionStats(
                "p",
                lag_records=1,
                lag_seconds=1.0,
                committed_offset=1,
                lag_bytes=1,
                retained_bytes=1,
            ),
        )
    )
    metrics.sources.register("t", lambda: stats)
    return metrics


def test_every_metric_has_the_labels_its_row_names() -> None:
    text = populated().exposition().decode()
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        name = group(family.name + "_total" if family.type == "counter" else family.name)
        for sample in family.samples:
            seen.setdefault(name, set()).update(set(sample.labels) - {"le"})
    for name, labels in documented_labels().items():
        assert name in seen, f"{name}: no series"
        assert seen[name] == labels, name


def group(name: str) -> str:
    for prefix in STANDARD:
        if name.startswith(prefix):
            return prefix + "*" if prefix.endswith("_") else prefix
    return name


def test_every_metric_is_documented_once_with_its_type() -> None:
    docs = documented()
    ours = {n: t for n, t in exposed().items() if not n.startswith(STANDARD)}
    assert ours, "no triggerd metrics exposed"
    assert set(ours) <= set(docs), sorted(set(ours) - set(docs))
    for name, kind in ours.items():
        assert docs[name] == kind, name
    standard = {group(n) for n in exposed()} - set(ours)
    assert standard == {"process_*", "python_gc_*", "python_info"}
    assert standard <= set(docs)


def test_every_documented_metric_exists() -> None:
    groups = {group(n) for n in exposed()}
    assert set(documented()) <= groups, sorted(set(documented()) - groups)


def _series_names() -> set[str]:
    names = set(exposed())
    for name, kind in exposed().items():
        if kind == "histogram":
            names |= {name + s for s in ("_bucket", "_sum", "_count")}
    return names


def test_dashboard_parses_and_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(dashboard["panels"]) >= 10
    referenced = {
        m for e in exprs for m in re.findall(r"\b((?:triggerd|process|python)_[a-z_]+)\b", e)
    }
    series = _series_names()
    assert referenced - series == set()
    # the CloudWatch-like figures the dashboard exists for
    for needed in (
        "triggerd_concurrent_executions",
        "triggerd_async_event_age_seconds_bucket",
        "triggerd_async_queue_depth",
        "triggerd_destination_delivery_failures_total",
        "triggerd_records_dropped_total",
        "triggerd_source_iterator_age_seconds",
    ):
        assert needed in referenced, needed


def test_dashboard_error_rate_is_over_the_invocations_cloudwatch_counts() -> None:
    # CloudWatch's Errors / Invocations: throttled requests are in neither.
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    [rate] = [e for e in exprs if 'outcome=~"function_error|timeout"' in e and " / " in e]
    _, denominator = rate.split(" / ")
    assert 'outcome!="throttled"' in denominator


def test_no_created_series_and_build_info_is_one() -> None:
    metrics = Metrics()
    metrics.invokes.tally("fn").count("ok")
    metrics.event_age.labels("t").observe(1.0)
    text = metrics.exposition().decode()
    assert "_created" not in text
    [info] = [f for f in text_string_to_metric_families(text) if f.name == "triggerd_build_info"]
    [sample] = info.samples
    assert sample.value == 1
    assert sample.labels["version"] == __version__
    assert sample.labels["python"] == ".".join(map(str, sys.version_info[:3]))


def test_iterator_age_and_offset_lag_cover_all_partitions_series_only_the_worst() -> None:
    count = MAX_PARTITION_SERIES + 10
    stats = SourceStats(
        partitions=tuple(
            PartitionStats(f"t-{i}", lag_records=i, lag_seconds=float(i), committed_offset=i)
            for i in range(count)
        )
    )
    metrics = Metrics()
    metrics.sources.register("orders", lambda: stats)
    value = metrics.registry.get_sample_value
    assert value("triggerd_source_iterator_age_seconds", {"trigger": "orders"}) == count - 1
    assert value("triggerd_source_offset_lag_records", {"trigger": "orders"}) == sum(range(count))
    text = metrics.exposition().decode()
    [lag] = [
        f for f in text_string_to_metric_families(text) if f.name == "triggerd_source_lag_seconds"
    ]
    shown = {s.labels["partition"] for s in lag.samples}
    assert len(shown) == MAX_PARTITION_SERIES
    assert shown == {f"t-{i}" for i in range(10, count)}  # the most lagging ones


def test_the_core_imports_without_opentelemetry() -> None:
    code = (
        "import sys, triggerd.daemon.app, triggerd.http.server, triggerd.cli.main\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
