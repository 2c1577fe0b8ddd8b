"""The local backend's runtimes (awslambdaric, custom `provided` runtimes in shell and Node.js),
its memory limit, provisioned and idle workers, scratch directory, metrics and heavy output."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fakes import SteppedClock
from triggerd.functions.backends.local import (
    MEMORY_SAMPLE_S,
    RSS_CHECK_EVERY,
    LocalBackend,
    LocalFunctionConfig,
)
from triggerd.telemetry.instrument import InstrumentedBackend
from triggerd.telemetry.metrics import Metrics
from triggerd.types import BackendContext, ConfigError, InvokeResult, Outcome, SystemClock

pytestmark = pytest.mark.integration

FUNCTIONS = Path(__file__).parent / "functions"
NODE = shutil.which("node")
CURL = shutil.which("curl")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


class CountingHandler(logging.Handler):
    """Counts function log lines per request id and stream (cheaper than caplog for floods)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: dict[tuple[str | None, str | None], int] = {}
        self.platform: dict[str | None, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        rid = getattr(record, "request_id", None)
        if getattr(record, "platform", False):
            self.platform.setdefault(rid, []).append(record.getMessage())
            return
        key = (rid, getattr(record, "stream", None))
        self.counts[key] = self.counts.get(key, 0) + 1


@pytest.fixture
def function_log() -> Iterator[CountingHandler]:
    logger = logging.getLogger("triggerd.function")
    handler = CountingHandler()
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # pytest's capture would format every line of the floods
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


Factory = Callable[..., Awaitable[LocalBackend]]


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    created: list[LocalBackend] = []

    async def make(
        name: str,
        *,
        clock: SystemClock | None = None,
        metrics: Metrics | None = None,
        start: bool = True,
        memory_sample_s: float = MEMORY_SAMPLE_S,
        **cfg: Any,
    ) -> LocalBackend:
        cfg.setdefault("handler", "app.handler")
        config = LocalFunctionConfig(code=str(FUNCTIONS / name), **cfg)
        ctx = BackendContext(
            "fn-" + name,
            clock or SystemClock(),
            logging.getLogger("test"),
            work_dir=str(tmp_path / "work"),
            metrics=metrics,
        )
        backend = LocalBackend(config, ctx, memory_sample_s=memory_sample_s)
        created.append(backend)
        if start:
            await backend.start()
        return backend

    yield make
    for backend in created:
        await backend.stop()


def body(result: Any) -> Any:
    return orjson.loads(result.payload)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def exit_body(rid: str, reason: str, error_type: str = "Runtime.ExitError") -> dict[str, str]:
    return {
        "errorType": error_type,
        "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: {reason}",
    }


# --------------------------------------------------------------------------------------------
# awslambdaric


async def test_awslambdaric_runs_an_unchanged_handler(make_backend: Factory) -> None:
    backend = await make_backend("actions", runtime_client="awslambdaric", timeout_s=10)
    ok = await backend.invoke(b'{"action": "noop"}')
    assert ok.outcome is Outcome.OK
    pid = body(ok)["pid"]
    assert body(ok) == {"pid": pid, "action": "noop"}
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"awslambdaric\x00app.handler" in f.read()
    raised = await backend.invoke(b'{"action": "raise", "value": 5}')
    assert raised.outcome is Outcome.FUNCTION_ERROR
    assert (body(raised)["errorType"], body(raised)["errorMessage"]) == (
        "ValueError",
        "bad value: 5",
    )
    marshal = body(await backend.invoke(b'{"action": "set"}'))
    assert marshal["errorType"] == "Runtime.MarshalError"
    rid = str(uuid.uuid4())
    exited = await backend.invoke(b'{"action": "exit", "code": 3}', request_id=rid)
    assert body(exited) == exit_body(rid, "exit status 3")
    after = await backend.invoke(b"{}")
    assert after.outcome is Outcome.OK and body(after)["pid"] != pid


async def test_awslambdaric_import_error_is_reported_once_without_a_restart_loop(
    make_backend: Factory,
) -> None:
    backend = await make_backend("import_error", runtime_client="awslambdaric", timeout_s=10)
    for _ in range(5):
        result = await backend.invoke(b"{}")
        assert result.outcome is Outcome.FUNCTION_ERROR
        assert body(result)["errorType"] == "Runtime.ImportModuleError"
    assert backend.stats["spawns"] == 1 and backend.stats["init_errors"] == 1


# --------------------------------------------------------------------------------------------
# Custom runtimes (provided)


@needs_curl
async def test_provided_shell_bootstrap_with_curl(
    make_backend: Factory, function_log: CountingHandler, tmp_path: Path
) -> None:
    backend = await make_backend("provided_shell", runtime="provided.al2023", handler="fn.x")
    rid = str(uuid.uuid4())
    result = await backend.invoke(b'{"n": 1}', request_id=rid)
    assert result.outcome is Outcome.OK
    assert body(result) == {
        "runtime": "shell",
        "tmpdir": str(tmp_path / "work" / "tmp"),
        "event": {"n": 1},
    }
    assert function_log.counts[(rid, "stdout")] == 1  # "handling <rid>", read before END
    failed = await backend.invoke(b'{"fail": 1}')
    assert failed.outcome is Outcome.FUNCTION_ERROR
    assert body(failed) == {"errorMessage": "asked to fail", "errorType": "Custom.Failure"}
    rid = str(uuid.uuid4())
    exited = await backend.invoke(b'{"exit": 1}', request_id=rid)
    assert body(exited) == exit_body(rid, "exit status 3")
    again = await backend.invoke(b'{"n": 2}')
    assert again.outcome is Outcome.OK and body(again)["event"] == {"n": 2}
    assert backend.stats["spawns"] == 2


@needs_curl
async def test_provided_init_error_is_reported_with_its_type_and_backs_off(
    make_backend: Factory,
) -> None:
    backend = await make_backend("provided_init_error", runtime="provided", handler="x")
    for _ in range(5):
        result = await backend.invoke(b"{}")
        assert body(result) == {"errorMessage": "config missing", "errorType": "Runtime.NoConfig"}
    assert backend.stats["spawns"] == 1 and not backend.workers


async def test_a_bootstrap_that_cannot_be_started_is_runtime_invalid_entrypoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, a bootstrap whose interpreter is missing (it passes the start's check: it is
    # an executable file) logged backend.spawn_failed and was an invoke error at every
    # invocation (retried without counting as an attempt), where Lambda fails the
    # invocation with the function's init error, Runtime.InvalidEntrypoint.
    code = tmp_path / "code"
    code.mkdir()
    bootstrap = code / "bootstrap"
    bootstrap.write_text("#!/nonexistent/interpreter\necho never\n")
    bootstrap.chmod(0o755)
    config = LocalFunctionConfig(runtime="provided.al2023", handler="x", code=str(code))
    ctx = BackendContext(
        "fn-entry", SystemClock(), logging.getLogger("test"), work_dir=str(tmp_path / "w")
    )
    backend = LocalBackend(config, ctx)
    await backend.start()
    try:
        for rid in ("first", "second"):
            result = await backend.invoke(b"{}", request_id=rid)
            assert result.outcome is Outcome.FUNCTION_ERROR
            assert result.function_error == "Unhandled"
            assert body(result) == {
                "errorType": "Runtime.InvalidEntrypoint",
                "errorMessage": f"RequestId: {rid} Error: fork/exec {bootstrap}: "
                "no such file or directory",
            }
        assert backend.stats["spawns"] == 1  # backs off like any init error
        [line] = [r for r in caplog.records if r.getMessage() == "backend.init_failed"]
        assert line.__dict__["error_type"] == "Runtime.InvalidEntrypoint"
        assert not [r for r in caplog.records if r.getMessage() == "backend.spawn_failed"]
    finally:
        await backend.stop()


@needs_node
async def test_provided_node_bootstrap(make_backend: Factory) -> None:
    backend = await make_backend("provided_node", runtime="provided", handler="index.handler")
    first = await backend.invoke(b'{"n": 1}')
    assert body(first) == {
        "runtime": "node",
        "handler": "index.handler",
        "tmpdir": backend.tmp_dir,
        "event": {"n": 1},
    }
    failed = await backend.invoke(b'{"action": "fail"}')
    assert failed.outcome is Outcome.FUNCTION_ERROR
    assert body(failed)["errorMessage"] == "node was asked to fail"
    rid = str(uuid.uuid4())
    exited = await backend.invoke(b'{"action": "exit"}', request_id=rid)
    assert body(exited) == exit_body(rid, "exit status 4")
    assert (await backend.invoke(b'{"n": 2}')).outcome is Outcome.OK


@needs_node
async def test_provided_node_over_its_memory_is_out_of_memory(make_backend: Factory) -> None:
    backend = await make_backend("provided_node", runtime="provided", timeout_s=20)
    rid = str(uuid.uuid4())
    result = await backend.invoke(b'{"action": "alloc", "mb": 2000}', request_id=rid)
    assert body(result) == exit_body(rid, "signal: killed", "Runtime.OutOfMemory")
    assert (await backend.invoke(b'{"n": 1}')).outcome is Outcome.OK


async def test_provided_without_an_executable_bootstrap_is_a_config_error(
    make_backend: Factory, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="needs an executable"):
        await make_backend("actions", runtime="provided")
    code = tmp_path / "code"
    code.mkdir()
    (code / "bootstrap").write_text("#!/bin/sh\n")
    config = LocalFunctionConfig(runtime="provided", code=str(code))
    backend = LocalBackend(config, BackendContext("f", SystemClock(), logging.getLogger("t")))
    with pytest.raises(ConfigError, match="is not executable"):
        await backend.start()


# --------------------------------------------------------------------------------------------
# Memory


def assert_out_of_memory(result: InvokeResult, rid: str, function_log: CountingHandler) -> int:
    """`result` is Lambda's Runtime.OutOfMemory, said in the function's log too; the REPORT
    line's Max Memory Used (MB)."""
    assert result.outcome is Outcome.FUNCTION_ERROR and result.function_error == "Unhandled"
    assert body(result) == exit_body(rid, "signal: killed", "Runtime.OutOfMemory")
    lines = function_log.platform[rid]
    assert lines[1] == (
        f"RequestId: {rid} Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory"
    )
    return int(re.search(r"Max Memory Used: (\d+) MB", lines[-1]).group(1))  # type: ignore[union-attr]


async def test_python_handler_over_memory_size_is_killed_as_out_of_memory(
    make_backend: Factory, function_log: CountingHandler
) -> None:
    backend = await make_backend("actions", memory_mb=128, timeout_s=20)
    pid = body(await backend.invoke(b"{}"))["pid"]
    rid = str(uuid.uuid4())
    result = await backend.invoke(b'{"action": "alloc", "mb": 4000}', request_id=rid)
    used = assert_out_of_memory(result, rid, function_log)
    assert 128 <= used < 4000
    assert backend.stats["out_of_memory"] == 1
    after = await backend.invoke(b"{}")
    assert after.outcome is Outcome.OK and body(after)["pid"] != pid


async def test_a_peak_over_memory_size_between_samples_is_out_of_memory(
    make_backend: Factory, function_log: CountingHandler
) -> None:
    # A peak the sampler did not see (here it samples once a second; at 10 ms a handler
    # that allocates fast and frees at once slips between samples) is in the kernel's
    # high-water mark after the invocation. Before, such an invocation succeeded with
    # "Max Memory Used: 141 MB" beside "Memory Size: 128 MB" (a handler that took 126 MB for
    # 49 ms), where Lambda would have killed it.
    backend = await make_backend("actions", memory_mb=128, timeout_s=20, memory_sample_s=1.0)
    pid = body(await backend.invoke(b"{}"))["pid"]
    rid = str(uuid.uuid4())
    event = {"action": "spike", "mb": 200, "then_sleep": 1.5}
    result = await backend.invoke(orjson.dumps(event), request_id=rid)
    used = assert_out_of_memory(result, rid, function_log)
    assert used > 128
    assert backend.stats["out_of_memory"] == 1
    assert not alive(pid)
    after = await backend.invoke(b"{}")
    assert after.outcome is Outcome.OK and body(after)["pid"] != pid


async def test_a_peak_of_an_earlier_invocation_does_not_fail_a_later_one(
    make_backend: Factory, function_log: CountingHandler
) -> None:
    # The kernel's high-water mark is the process's peak since it started: a peak of an
    # invocation too short for it to be read (or of init) was still in it when a later, longer
    # invocation read it, and failed that one as Runtime.OutOfMemory, though it used no memory.
    # It is reset when an invocation starts on a worker whose mark was not read since.
    backend = await make_backend("actions", memory_mb=128, timeout_s=20, memory_sample_s=1.0)
    pid = body(await backend.invoke(b"{}"))["pid"]
    short = {"action": "spike", "mb": 200, "then_sleep": 0}  # unseen: read no mark after it
    assert (await backend.invoke(orjson.dumps(short))).outcome is Outcome.OK
    rid = str(uuid.uuid4())
    event = {"action": "sleep", "seconds": 1.2}  # long enough for the mark to be read
    result = await backend.invoke(orjson.dumps(event), request_id=rid)
    assert result.outcome is Outcome.OK, body(result)
    assert backend.stats["out_of_memory"] == 0
    assert alive(pid)
    # A peak of the invocation itself still fails it.
    spike = {"action": "spike", "mb": 200, "then_sleep": 1.2}
    rid = str(uuid.uuid4())
    result = await backend.invoke(orjson.dumps(spike), request_id=rid)
    assert body(result) == exit_body(rid, "signal: killed", "Runtime.OutOfMemory")
    assert backend.stats["out_of_memory"] == 1


async def test_memory_under_the_size_is_reported_and_allowed(
    make_backend: Factory, function_log: CountingHandler
) -> None:
    backend = await make_backend("actions", memory_mb=256)
    rid = str(uuid.uuid4())
    result = await backend.invoke(b'{"action": "alloc", "mb": 64}', request_id=rid)
    assert result.outcome is Outcome.OK and body(result)["held"] == 64
    report = function_log.platform[rid][-1]
    used = int(re.search(r"Max Memory Used: (\d+) MB", report).group(1))  # type: ignore[union-attr]
    assert 64 < used < 256


# --------------------------------------------------------------------------------------------
# Output


async def test_five_mb_of_output_is_all_logged_and_the_response_arrives(
    make_backend: Factory, function_log: CountingHandler
) -> None:
    backend = await make_backend("actions", timeout_s=30)
    rid = str(uuid.uuid4())
    lines = 26_000  # 100 bytes a line on each stream: 5.2 MB in all
    result = await backend.invoke(orjson.dumps({"action": "flood", "lines": lines}), request_id=rid)
    assert result.outcome is Outcome.OK and body(result)["action"] == "flood"
    assert function_log.counts[(rid, "stdout")] == lines
    assert function_log.counts[(rid, "stderr")] == lines
    assert function_log.platform[rid][-2] == f"END RequestId: {rid}"
    assert (await backend.invoke(b"{}")).outcome is Outcome.OK


# --------------------------------------------------------------------------------------------
# Provisioned and idle workers, scratch directory


async def test_provisioned_workers_start_with_the_backend_and_are_replaced(
    make_backend: Factory, function_log: CountingHandler
) -> None:
    backend = await make_backend("echo", provisioned_concurrency=2, reserved_concurrency=3)
    assert len(backend.workers) == 2 and backend.stats["cold_starts"] == 2
    rid = str(uuid.uuid4())
    result = await backend.invoke(b"{}", request_id=rid)
    assert body(result)["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"
    assert "Init Duration" not in function_log.platform[rid][-1]
    assert backend.stats["spawns"] == 2
    victim = next(iter(backend.workers))
    await victim.kill()
    await wait_for(lambda: len(backend.workers) == 2 and victim not in backend.workers)
    assert backend.stats["spawns"] == 3


async def test_idle_workers_are_reaped_down_to_the_provisioned_count(
    make_backend: Factory,
) -> None:
    clock = SteppedClock()
    backend = await make_backend(
        "actions",
        clock=clock,
        provisioned_concurrency=1,
        reserved_concurrency=3,
        idle_timeout_s=600,
    )
    results = await asyncio.gather(
        *(backend.invoke(b'{"action": "sleep", "seconds": 0.3}') for _ in range(3))
    )
    assert all(r.outcome is Outcome.OK for r in results)
    assert len(backend.workers) == 3
    assert await backend.reap_idle() == 0
    clock.offset += 600
    assert await backend.reap_idle() == 2
    assert len(backend.workers) == 1
    assert (await backend.invoke(b"{}")).outcome is Outcome.OK


async def test_idle_reaper_runs_by_itself(make_backend: Factory) -> None:
    backend = await make_backend("actions", idle_timeout_s=0.2)
    pid = body(await backend.invoke(b"{}"))["pid"]
    await wait_for(lambda: not backend.workers)
    assert backend.stats["reaped"] == 1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_scratch_directory_is_tmpdir_and_cleaned_at_start(
    make_backend: Factory, tmp_path: Path
) -> None:
    stale = tmp_path / "work" / "tmp" / "left-over"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    backend = await make_backend("actions")
    assert not stale.exists()
    out = body(await backend.invoke(b'{"action": "tmp"}'))
    assert out["tmpdir"] == str(tmp_path / "work" / "tmp")
    assert Path(out["file"]).parent == tmp_path / "work" / "tmp"
    assert out["files"] == [Path(out["file"]).name]


# --------------------------------------------------------------------------------------------
# Metrics


async def test_metrics_count_invocations_cold_starts_and_billed_gb_seconds(
    make_backend: Factory,
) -> None:
    metrics = Metrics()
    backend = await make_backend("actions", metrics=metrics, memory_mb=512)
    # Invocations are counted once, by the instrumentation the daemon puts around backends.
    counted = InstrumentedBackend(backend, "fn-actions", metrics, SystemClock())
    for event in (b"{}", b"{}", b'{"action": "raise"}'):
        await counted.invoke(event)

    def value(name: str, **labels: str) -> float:
        found = metrics.registry.get_sample_value(name, {"function": "fn-actions", **labels})
        return 0.0 if found is None else found

    assert value("triggerd_invocations_total", outcome="ok") == 2
    assert value("triggerd_invocations_total", outcome="function_error") == 1
    assert value("triggerd_function_cold_starts_total") == 1
    assert value("triggerd_function_init_duration_seconds_count") == 1
    assert value("triggerd_function_duration_seconds_count") == 3
    assert value("triggerd_function_max_memory_bytes") > 1024 * 1024
    billed = value("triggerd_function_billed_gb_seconds_total")
    assert billed >= 3 * 0.5 / 1000  # at least 1 ms each at 0.5 GB
    duration = value("triggerd_function_duration_seconds_sum")
    assert billed <= (duration * 1000 + 3) * 0.5 / 1000 + 1e-9


# --------------------------------------------------------------------------------------------
# recycling workers (a runtime client that leaks: awslambdaric sets os.environ per invocation)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_awslambdaric_worker_is_replaced_after_n_invocations_with_no_failure_or_cold_start(
    make_backend: Factory,
) -> None:
    backend = await make_backend(
        "actions", runtime_client="awslambdaric", timeout_s=10, worker_max_invocations=5
    )
    first = await backend.invoke(b'{"action": "noop"}', want_log_tail=True)
    assert first.outcome is Outcome.OK and "Init Duration" in first.log_tail
    old_pid = body(first)["pid"]
    results = [await backend.invoke(b'{"action": "noop"}', want_log_tail=True) for _ in range(4)]
    await wait_until(lambda: backend.stats["recycled"] == 1, "the replacement")
    results += [await backend.invoke(b'{"action": "noop"}', want_log_tail=True) for _ in range(3)]
    assert [r.outcome for r in results] == [Outcome.OK] * 7
    assert not any("Init Duration" in r.log_tail for r in results)  # none waited for a start
    pids = [body(r)["pid"] for r in results]
    assert pids[:4] == [old_pid] * 4
    assert pids[4:] == [pids[4]] * 3 and pids[4] != old_pid
    await wait_until(lambda: not alive(old_pid), "the old worker to end")
    assert len(backend.workers) == 1
    assert backend.stats["errors"] == 0


async def test_a_worker_whose_memory_grows_is_replaced_between_invocations(
    make_backend: Factory,
) -> None:
    backend = await make_backend("actions", timeout_s=10, worker_max_rss_growth_mb=16)
    first = await backend.invoke(b'{"action": "noop"}')
    old_pid = body(first)["pid"]
    for _ in range(3):  # 24 MB kept: over the 16 MB allowed
        assert (await backend.invoke(b'{"action": "keep", "mb": 8}')).outcome is Outcome.OK
    for _ in range(RSS_CHECK_EVERY - 4):  # growth is checked every RSS_CHECK_EVERY invocations
        assert (await backend.invoke(b'{"action": "noop"}')).outcome is Outcome.OK
    await wait_until(lambda: backend.stats["recycled"] == 1, "the replacement")
    after = await backend.invoke(b'{"action": "noop"}', want_log_tail=True)
    assert after.outcome is Outcome.OK and body(after)["pid"] != old_pid
    assert "Init Duration" not in after.log_tail
    assert backend.stats["errors"] == 0


async def test_without_growth_or_a_limit_a_worker_is_kept(make_backend: Factory) -> None:
    backend = await make_backend("actions", timeout_s=10)
    pids = {body(await backend.invoke(b'{"action": "noop"}'))["pid"] for _ in range(30)}
    assert len(pids) == 1 and backend.stats["recycled"] == 0
