"""The bundled Python client puts each invocation's trace id in `_X_AMZN_TRACE_ID` without a
leak: os.environ, getenv and child processes see the current value, and a hundred thousand
distinct trace ids leave the process's memory where it was (through os.environ, the C
library keeps every value: about 14 MB). Each case runs in a fresh interpreter with -S, as a
worker does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from triggerd.functions.runtime_client import bootstrap

SCRIPT = """
import importlib.util, json, os, subprocess, sys
spec = importlib.util.spec_from_file_location("bootstrap", sys.argv[1])
bootstrap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bootstrap)
mode, count = sys.argv[2], int(sys.argv[3])

def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

def trace(i):
    return "Root=1-%08x-%024x;Parent=%016x;Sampled=0" % (i, i, i)

def child_sees():
    out = subprocess.run(
        ["/bin/sh", "-c", 'printf %s "${_X_AMZN_TRACE_ID-unset}"'],
        capture_output=True, text=True, check=True,
    )
    return out.stdout

env = bootstrap.TraceEnv()
if mode == "environ":
    set_trace = lambda value: os.environ.__setitem__("_X_AMZN_TRACE_ID", value)
else:
    env.set(trace(0))
    env.prepare()
    set_trace = env.set
set_trace(trace(1))
before = rss_kb()
for i in range(2, count):
    set_trace(trace(i))
grown = rss_kb() - before
report = {"grown_kb": grown, "in_place": env.in_place}
last = trace(count - 1)
report["views"] = [os.environ["_X_AMZN_TRACE_ID"], os.getenv("_X_AMZN_TRACE_ID"), child_sees()]
report["expected"] = last
if mode == "traceenv":
    env.set(None)
    report["unset"] = ["_X_AMZN_TRACE_ID" in os.environ, child_sees()]
    env.set(trace(7))
    os.environ["_X_AMZN_TRACE_ID"] = "set-by-the-handler"  # replaces the entry (setenv)
    env.set(trace(8))
    report["after_handler"] = [os.environ["_X_AMZN_TRACE_ID"], child_sees(), trace(8)]
    del os.environ["_X_AMZN_TRACE_ID"]
    env.set(trace(9))
    report["after_delete"] = [os.environ["_X_AMZN_TRACE_ID"], child_sees(), trace(9)]
print(json.dumps(report))
"""

COUNT = 100_000


def run(mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-S", "-c", SCRIPT, bootstrap.__file__, mode, str(COUNT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_distinct_trace_ids_leave_the_worker_s_memory_flat() -> None:
    report = run("traceenv")
    assert report["in_place"] is True
    assert report["grown_kb"] < 1024, report  # os.environ: about 14,000 KB (next test)
    expected = report["expected"]
    assert report["views"] == [expected, expected, expected]
    assert report["unset"] == [False, "unset"]
    after_handler = report["after_handler"]
    assert isinstance(after_handler, list)
    assert after_handler[:2] == [after_handler[2]] * 2
    after_delete = report["after_delete"]
    assert isinstance(after_delete, list)
    assert after_delete[:2] == [after_delete[2]] * 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_through_os_environ_the_c_library_keeps_every_distinct_value() -> None:
    """Why the client does not set os.environ per invocation (the bound above means something)."""
    report = run("environ")
    assert report["grown_kb"] > 8 * 1024, report
    expected = report["expected"]
    assert report["views"] == [expected, expected, expected]
