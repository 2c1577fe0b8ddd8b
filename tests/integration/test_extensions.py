"""External extensions and the Telemetry API with real worker processes: a stdlib Python
extension (functions/extension_layer/extensions/recorder) registers, subscribes to telemetry and
records what it receives in a file the tests read."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from triggerd.functions.backends.local import LocalBackend, LocalFunctionConfig
from triggerd.types import BackendContext, Outcome, SystemClock

pytestmark = pytest.mark.integration

FUNCTIONS = Path(__file__).parent / "functions"
LAYER = FUNCTIONS / "extension_layer"

Factory = Callable[..., Awaitable[LocalBackend]]


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    created: list[LocalBackend] = []

    async def make(opt: Path = LAYER, **env: str) -> LocalBackend:
        config = LocalFunctionConfig(
            handler="app.handler",
            code=str(FUNCTIONS / "extension_probe"),
            timeout_s=5,
            environment={"RECORD_FILE": str(tmp_path / "record.jsonl"), **env},
            layers=[str(opt)],
        )
        ctx = BackendContext(
            "fn-ext", SystemClock(), logging.getLogger("test"), work_dir=str(tmp_path / "work")
        )
        backend = LocalBackend(config, ctx)
        created.append(backend)
        await backend.start()
        return backend

    yield make
    for backend in created:
        await backend.stop()


def recorded(tmp_path: Path) -> list[dict[str, Any]]:
    with open(tmp_path / "record.jsonl") as f:
        return [json.loads(line) for line in f]


def telemetry(docs: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [d["telemetry"] for d in docs if d.get("telemetry", {}).get("type") == event_type]


async def test_extension_registers_gets_invoke_and_shutdown_events(
    make_backend: Factory, tmp_path: Path
) -> None:
    backend = await make_backend()
    first = await backend.invoke(b"{}", request_id="rid-1")
    second = await backend.invoke(b"{}", request_id="rid-2")
    assert first.outcome is Outcome.OK and second.outcome is Outcome.OK
    assert backend.stats["spawns"] == 1
    await backend.stop()
    docs = recorded(tmp_path)
    assert docs[0]["name"] == "recorder"
    assert docs[0]["registered"] == {
        "functionName": "fn-ext",
        "functionVersion": "$LATEST",
        "handler": "app.handler",
    }
    events = [d["event"] for d in docs if "event" in d]
    assert [e["eventType"] for e in events] == ["INVOKE", "INVOKE", "SHUTDOWN"]
    assert [e.get("requestId") for e in events[:2]] == ["rid-1", "rid-2"]
    assert events[0]["invokedFunctionArn"].endswith(":function:fn-ext")
    assert events[0]["tracing"]["type"] == "X-Amzn-Trace-Id"
    assert events[2]["shutdownReason"] == "spindown"
    shutdown = next(d for d in docs if d.get("event", {}).get("eventType") == "SHUTDOWN")
    assert 0 < shutdown["remaining_ms"] <= 2000
    assert docs[-1] == {"exiting": "recorder"}


async def test_telemetry_delivers_platform_events_and_function_lines(
    make_backend: Factory, tmp_path: Path
) -> None:
    backend = await make_backend()
    ok = await backend.invoke(b"{}", request_id="rid-ok")
    failed = await backend.invoke(b'{"fail": true}', request_id="rid-bad")
    assert ok.outcome is Outcome.OK and failed.outcome is Outcome.FUNCTION_ERROR
    await backend.stop()
    docs = recorded(tmp_path)
    init = telemetry(docs, "platform.initStart")
    assert init and init[0]["record"]["functionName"] == "fn-ext"
    assert init[0]["record"]["initializationType"] == "on-demand"
    assert telemetry(docs, "platform.initRuntimeDone")[0]["record"]["status"] == "success"
    starts = telemetry(docs, "platform.start")
    assert [s["record"]["requestId"] for s in starts] == ["rid-ok", "rid-bad"]
    done = {d["record"]["requestId"]: d["record"] for d in telemetry(docs, "platform.runtimeDone")}
    assert done["rid-ok"]["status"] == "success"
    assert done["rid-bad"]["status"] == "error"
    assert done["rid-bad"]["errorType"] == "ValueError"
    reports = {d["record"]["requestId"]: d["record"] for d in telemetry(docs, "platform.report")}
    metrics = reports["rid-ok"]["metrics"]
    assert metrics["memorySizeMB"] == 128 and metrics["billedDurationMs"] >= 1
    assert "initDurationMs" in metrics and "initDurationMs" not in reports["rid-bad"]["metrics"]
    lines = [d["record"] for d in telemetry(docs, "function")]
    assert "probe saw rid-ok" in lines and "probe saw rid-bad" in lines
    for item in telemetry(docs, "platform.start"):
        assert item["time"].endswith("Z") and item["time"][10] == "T"


async def test_environment_is_not_reused_until_the_extension_polls_again(
    make_backend: Factory, tmp_path: Path
) -> None:
    backend = await make_backend(EXTENSION_WORK_S="0.3")
    first = await backend.invoke(b"{}", request_id="rid-1")
    # The caller has its answer while the extension still works on rid-1 ...
    assert "done" not in orjson.loads(first.payload)["recorded"][-1]
    second = await backend.invoke(b"{}", request_id="rid-2")
    # ... and the second invocation runs only after the extension asked for the next event.
    assert '{"done": "rid-1"}' in orjson.loads(second.payload)["recorded"]
    assert backend.stats["spawns"] == 1


async def test_an_extension_crashing_during_init_fails_the_init(
    make_backend: Factory, tmp_path: Path
) -> None:
    opt = tmp_path / "opt"
    (opt / "extensions").mkdir(parents=True)
    crasher = opt / "extensions" / "crasher"
    crasher.write_text("#!/bin/sh\necho going down\nexit 3\n")
    crasher.chmod(0o755)
    backend = await make_backend(opt)
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = orjson.loads(result.payload)
    assert error["errorType"] == "Extension.Crash"
    assert "crasher" in error["errorMessage"] and "exit status 3" in error["errorMessage"]


async def test_extension_gets_timeout_shutdown_when_the_function_times_out(
    make_backend: Factory, tmp_path: Path
) -> None:
    opt = tmp_path / "opt"
    shutil.copytree(LAYER, opt)
    backend = await make_backend(opt)
    backend.config = backend.config.model_copy(update={"timeout_s": 1.0})
    result = await backend.invoke(b'{"sleep": 3}')
    assert result.outcome is Outcome.TIMEOUT
    docs = recorded(tmp_path)
    events = [d["event"] for d in docs if "event" in d]
    assert events[-1]["eventType"] == "SHUTDOWN"
    assert events[-1]["shutdownReason"] == "timeout"
    # The platform events of the timed-out invocation reached the listener before SHUTDOWN.
    assert [d["record"]["status"] for d in telemetry(docs, "platform.runtimeDone")] == ["timeout"]
    assert [d["record"]["status"] for d in telemetry(docs, "platform.report")] == ["timeout"]
