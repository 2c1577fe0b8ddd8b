"""Node.js runtimes (nodejs18.x / 20.x / 22.x) with the bundled Node.js runtime client and a
real `node`: CommonJS and ES module handlers, async and callback styles, the context object,
errors, init errors, timeouts and log lines in Lambda's Node.js format."""

from __future__ import annotations

import base64
import logging
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from triggerd.functions.backends.local import LocalBackend, LocalFunctionConfig
from triggerd.types import BackendContext, ConfigError, Outcome, SystemClock

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH"),
]

FUNCTIONS = Path(__file__).parent / "functions"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
Factory = Callable[..., Awaitable[LocalBackend]]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def function_log() -> AsyncIterator[Lines]:
    handler = Lines()
    log = logging.getLogger("triggerd.function")
    old = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield handler  # type: ignore[misc]
    log.removeHandler(handler)
    log.setLevel(old)


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    created: list[LocalBackend] = []

    async def make(name: str, handler: str = "index.handler", **cfg: Any) -> LocalBackend:
        cfg.setdefault("runtime", "nodejs20.x")
        config = LocalFunctionConfig(handler=handler, code=str(FUNCTIONS / name), **cfg)
        ctx = BackendContext(
            "fn-" + name, SystemClock(), logging.getLogger("test"), work_dir=str(tmp_path / name)
        )
        backend = LocalBackend(config, ctx)
        created.append(backend)
        await backend.start()
        return backend

    yield make
    for backend in created:
        await backend.stop()


def body(result: Any) -> Any:
    return orjson.loads(result.payload)


@pytest.mark.parametrize("runtime", ["nodejs18.x", "nodejs20.x", "nodejs22.x"])
async def test_async_commonjs_handler_gets_event_and_context(
    make_backend: Factory, runtime: str
) -> None:
    backend = await make_backend("node_cjs", runtime=runtime, memory_mb=256, timeout_s=5)
    context = base64.b64encode(b'{"custom": {"k": "v"}}').decode()
    result = await backend.invoke(b'{"a": 1}', request_id="rid-node", client_context=context)
    assert result.outcome is Outcome.OK, result.payload
    got = body(result)
    assert got["awsRequestId"] == "rid-node"
    assert got["functionName"] == "fn-node_cjs"
    assert got["functionVersion"] == "$LATEST"
    assert got["invokedFunctionArn"].endswith(":function:fn-node_cjs")
    assert got["memoryLimitInMB"] == "256"
    assert got["logGroupName"] == "/aws/lambda/fn-node_cjs"
    assert got["logStreamName"].startswith(("20", "21"))
    assert 0 < got["remaining"] <= 5000
    assert got["callbackWaitsForEmptyEventLoop"] is True
    assert got["clientContext"] == {"custom": {"k": "v"}}
    assert got["traceId"].startswith("Root=1-")
    assert got["executionEnv"] == "AWS_Lambda_" + runtime
    assert got["nodePath"].split(":")[-1] == str(FUNCTIONS / "node_cjs")


async def test_callback_handler_results_and_errors(make_backend: Factory) -> None:
    backend = await make_backend("node_cjs", handler="index.callback")
    ok = await backend.invoke(b'{"n": 7}')
    assert ok.outcome is Outcome.OK and body(ok) == {"via": "callback", "n": 7}
    failed = await backend.invoke(b'{"fail": true}')
    assert failed.outcome is Outcome.FUNCTION_ERROR
    error = body(failed)
    assert error["errorType"] == "TypeError" and error["errorMessage"] == "callback failure"


async def test_es_modules_by_extension_and_by_package_type(make_backend: Factory) -> None:
    esm = await make_backend("node_esm")
    assert body(await esm.invoke(b'{"x": 1}')) == {"module": "esm", "echo": {"x": 1}}
    typed = await make_backend("node_type_module", handler="app.handler")
    assert body(await typed.invoke(b'{"n": 2}')) == {"module": "esm", "n": 2}


async def test_thrown_error_has_lambdas_shape_and_the_worker_stays(make_backend: Factory) -> None:
    backend = await make_backend("node_cjs")
    result = await backend.invoke(b'{"throw": true}')
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = body(result)
    assert error["errorType"] == "ValidationError"
    assert error["errorMessage"] == "bad input"
    assert error["trace"][0] == "ValidationError: bad input"
    assert error["trace"][1].lstrip().startswith("at ")
    assert (await backend.invoke(b"{}")).outcome is Outcome.OK
    assert backend.stats["spawns"] == 1


async def test_missing_module_is_an_init_error(make_backend: Factory) -> None:
    backend = await make_backend("node_import_error")
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = body(result)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "a-module-that-does-not-exist" in error["errorMessage"]
    missing = await make_backend("node_cjs", handler="index.nothing")
    assert body(await missing.invoke(b"{}"))["errorType"] == "Runtime.HandlerNotFound"


async def test_timeout_kills_the_node_worker(make_backend: Factory) -> None:
    backend = await make_backend("node_cjs", timeout_s=1)
    result = await backend.invoke(b'{"sleep_ms": 5000}')
    assert result.outcome is Outcome.TIMEOUT
    assert "Task timed out after 1.00 seconds" in body(result)["errorMessage"]
    assert (await backend.invoke(b"{}")).outcome is Outcome.OK
    assert backend.stats["spawns"] == 2


async def test_console_lines_carry_time_request_id_and_level(
    make_backend: Factory, function_log: Lines
) -> None:
    backend = await make_backend("node_cjs")
    await backend.invoke(b'{"k": 1}', request_id="rid-log")
    assert any(
        re.fullmatch(ISO + '\trid-log\tINFO\tevent {"k":1}', line) for line in function_log.lines
    )
    assert any(
        re.fullmatch(ISO + "\trid-log\tWARN\ttwo\rlines", line) for line in function_log.lines
    )


def test_missing_node_is_a_config_error_naming_the_runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValidationError, match=r"runtime nodejs22\.x needs the `node` command"):
        LocalFunctionConfig(runtime="nodejs22.x", handler="index.handler", code=str(tmp_path))


async def test_an_error_thrown_outside_the_handler_fails_the_invocation(
    make_backend: Factory,
) -> None:
    backend = await make_backend("node_cjs", handler="index.stray")
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = body(result)
    assert (error["errorType"], error["errorMessage"]) == ("RangeError", "thrown in a timer")


async def test_interpreter_names_the_node_to_run_and_another_major_is_a_warning(
    make_backend: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = shutil.which("node")
    assert node is not None
    link = tmp_path / "bin" / "my-node"
    link.parent.mkdir()
    link.symlink_to(node)
    # The machine's node is 20: nodejs20.x through `interpreter` runs it without a warning.
    backend = await make_backend("node_cjs", interpreter=str(link))
    assert backend.spec is not None and backend.spec.argv[0] == str(link)
    assert (await backend.invoke(b"{}")).outcome is Outcome.OK
    assert "backend.node_version_mismatch" not in caplog.text
    other = await make_backend("node_cjs", runtime="nodejs18.x")
    assert (await other.invoke(b"{}")).outcome is Outcome.OK
    warned = [r for r in caplog.records if r.getMessage() == "backend.node_version_mismatch"]
    assert len(warned) == 1 and warned[0].__dict__["runtime"] == "nodejs18.x"


async def test_a_node_interpreter_that_does_not_run_is_a_config_error(
    make_backend: Factory, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"functions\.fn-node_cjs\.interpreter: .*no-node"):
        await make_backend("node_cjs", interpreter=str(tmp_path / "no-node"))
