"""Pure parts of the local backend: its config model, Lambda's texts, the bundled runtime."""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import logging
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from triggerd.functions.backends import local, local_config, local_memory
from triggerd.functions.backends.local import LocalBackend, LocalFunctionConfig, plugin
from triggerd.functions.backends.local_config import DEFAULT_BOTO3_VERSION, Prepared
from triggerd.functions.backends.local_python import Interpreter
from triggerd.functions.backends.local_worker import LogCapture, exit_description
from triggerd.functions.runtime_client import bootstrap
from triggerd.types import BackendContext, SystemClock

# --------------------------------------------------------------------------------------------
# Config


def config(**values: Any) -> LocalFunctionConfig:
    return LocalFunctionConfig(**({"handler": "app.handler", "code": "fn"} | values))


def test_config_defaults_follow_lambda() -> None:
    cfg = config()
    assert (cfg.backend, cfg.runtime, cfg.version) == ("local", "python3.11", "$LATEST")
    assert (cfg.timeout_s, cfg.memory_mb, cfg.reserved_concurrency) == (3.0, 128, None)
    assert cfg.environment == {}


def test_config_accepts_python3_runtimes_and_rejects_others() -> None:
    assert config(runtime="python3.12").runtime == "python3.12"
    assert config(runtime="python3.9").runtime == "python3.9"
    for unsupported in ("python3.8", "python3.99", "python3"):
        with pytest.raises(ValidationError, match="not supported"):
            config(runtime=unsupported)
    with pytest.raises(ValidationError, match="not supported by the local backend"):
        config(runtime="nodejs16.x")
    with pytest.raises(ValidationError, match="not supported by the local backend"):
        config(runtime="java21")


@pytest.mark.parametrize("handler", ["app.handler", "pkg.mod.func", "dir/app.handler"])
def test_config_accepts_module_function_handlers(handler: str) -> None:
    assert config(handler=handler).handler == handler


@pytest.mark.parametrize("handler", ["app", "app.", ".handler", "app.my-handler", "a b.c"])
def test_config_rejects_malformed_handlers(handler: str) -> None:
    with pytest.raises(ValidationError, match=r"must look like module\.function"):
        config(handler=handler)


def test_config_rejects_reserved_and_badly_named_variables() -> None:
    with pytest.raises(ValidationError, match="AWS_REGION is reserved by Lambda"):
        config(environment={"AWS_REGION": "x"})
    with pytest.raises(ValidationError, match="invalid variable name '1X'"):
        config(environment={"1X": "x"})
    with pytest.raises(ValidationError, match="invalid variable name 'A'"):
        config(environment={"A": "x"})


def test_config_rejects_environment_over_4_kb() -> None:
    assert config(environment={"BIG": "x" * 4093}).environment["BIG"]
    with pytest.raises(ValidationError, match="over the 4096 bytes limit"):
        config(environment={"BIG": "x" * 4094})


@pytest.mark.parametrize(
    "values",
    [
        {"memory_mb": 127},
        {"memory_mb": 10241},
        {"timeout_s": 0.5},
        {"timeout_s": 901},
        {"reserved_concurrency": -1},
        {"unknown": 1},
    ],
)
def test_config_enforces_lambda_limits(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        config(**values)


@pytest.mark.parametrize("runtime", ["provided", "provided.al2", "provided.al2023"])
def test_config_accepts_provided_runtimes_with_any_handler(runtime: str) -> None:
    cfg = LocalFunctionConfig(runtime=runtime, code="fn")
    assert cfg.provided and cfg.handler == ""
    assert config(runtime=runtime, handler="whatever-it-is").handler == "whatever-it-is"


def test_config_checks_versions_role_arns_and_layer_count() -> None:
    with pytest.raises(ValidationError, match="not a version"):
        config(boto3_version="1.0; rm -rf /")
    with pytest.raises(ValidationError, match="IAM role ARN"):
        config(role_arn="arn:aws:iam::12:user/x")
    assert config(role_arn="arn:aws:iam::123456789012:role/app").role_duration_s == 3600
    with pytest.raises(ValidationError):
        config(role_duration_s=60)
    with pytest.raises(ValidationError):
        config(layers=[f"l{i}" for i in range(6)])  # Lambda allows 5
    with pytest.raises(ValidationError, match=r"python3\.x runtimes only"):
        config(runtime="provided", handler="h", requirements="r.txt")


def test_config_role_settings_need_a_role_arn() -> None:
    role = "arn:aws:iam::123456789012:role/app"
    cfg = config(role_arn=role, role_session_name="s1", role_duration_s=900)
    assert (cfg.role_session_name, cfg.role_duration_s) == ("s1", 900)
    with pytest.raises(ValidationError, match="role_session_name: only used with role_arn"):
        config(role_session_name="s1")
    with pytest.raises(ValidationError, match="role_duration_s: only used with role_arn"):
        config(role_duration_s=900)


def test_config_runtime_client_is_for_python_runtimes_only() -> None:
    assert config(runtime_client="awslambdaric").runtime_client == "awslambdaric"
    with pytest.raises(ValidationError, match=r"python3\.x runtimes only"):
        config(runtime="provided", runtime_client="awslambdaric")
    with pytest.raises(ValidationError):
        config(runtime_client="other")


@pytest.mark.parametrize("runtime", ["provided.al2023", "nodejs20.x"])
def test_config_boto3_version_is_for_python_runtimes_only(runtime: str) -> None:
    assert config(runtime="python3.12", boto3_version="1.40.0").runtime_boto3 == "1.40.0"
    with pytest.raises(ValidationError, match=r"boto3_version applies to python3\.x runtimes"):
        config(runtime=runtime, boto3_version="1.40.0")


def test_config_provisioned_concurrency_fits_under_the_maximum() -> None:
    assert config(provisioned_concurrency=6).max_workers == 6  # raises the default of 4
    assert config(provisioned_concurrency=2, reserved_concurrency=2).max_workers == 2
    with pytest.raises(ValidationError, match="over reserved_concurrency"):
        config(provisioned_concurrency=3, reserved_concurrency=2)
    assert config().idle_timeout_s == 300
    with pytest.raises(ValidationError):
        config(idle_timeout_s=0)


def ctx(work_dir: str = "/w/f") -> BackendContext:
    return BackendContext("f", SystemClock(), logging.getLogger("t"), work_dir=work_dir)


PY = Interpreter("/py/bin/python3.12", "3.12")
PREPARED = Prepared("/code", "/w/f/opt-1", PY, "/w/f/deps-1", ("/rt/python3.12/boto3-1.0",))


def test_worker_spec_per_runtime() -> None:
    bundled = local_config.worker_spec(config(runtime="python3.12"), ctx(), PREPARED, "/w/f/tmp")
    script = os.path.abspath(bootstrap.__file__)
    assert bundled.argv == ("/py/bin/python3.12", "-S", script)
    assert bundled.env["TMPDIR"] == "/w/f/tmp"
    assert bundled.env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
    ric = local_config.worker_spec(
        config(runtime_client="awslambdaric", runtime="python3.12"),
        ctx(),
        replace(PREPARED, runtime_paths=(*PREPARED.runtime_paths, "/rt/python3.12/ric")),
    )
    assert ric.argv == ("/py/bin/python3.12", "-S", "-m", "awslambdaric", "app.handler")
    assert ric.env["LAMBDA_RUNTIME_DIR"] == "/rt/python3.12/ric"
    assert "TMPDIR" not in ric.env
    provided = local_config.worker_spec(
        config(runtime="provided.al2", handler="h"), ctx(), replace(PREPARED, interpreter=None)
    )
    assert provided.argv == ("/code/bootstrap",) and provided.cwd == "/code"
    assert "AWS_EXECUTION_ENV" not in provided.env and "PYTHONPATH" not in provided.env
    assert provided.env["_HANDLER"] == "h" and provided.env["LAMBDA_TASK_ROOT"] == "/code"


def test_worker_paths_follow_lambda_order() -> None:
    """PYTHONPATH: code, dependencies, layers (site-packages, then python/), the runtime's
    packages, the runtime; /opt/bin last on PATH; LD_LIBRARY_PATH ends with /opt/lib."""
    spec = local_config.worker_spec(config(runtime="python3.12"), ctx(), PREPARED)
    runtime_dir = os.path.dirname(os.path.abspath(bootstrap.__file__))
    assert spec.env["PYTHONPATH"].split(":") == [
        "/code",
        "/w/f/deps-1",
        "/w/f/opt-1/python/lib/python3.12/site-packages",
        "/w/f/opt-1/python",
        "/rt/python3.12/boto3-1.0",
        runtime_dir,
    ]
    assert spec.env["PATH"].endswith(":/w/f/opt-1/bin")
    assert spec.env["LD_LIBRARY_PATH"].split(":")[-5:] == [
        runtime_dir,
        runtime_dir + "/lib",
        "/code",
        "/code/lib",
        "/w/f/opt-1/lib",
    ]
    assert not any(k.startswith("AWS_ACCESS") or k.startswith("AWS_SECRET") for k in spec.env)


def test_backend_scratch_dir_is_under_the_work_dir() -> None:
    backend = plugin.create(config(), ctx("/var/lib/triggerd/f"))
    assert isinstance(backend, LocalBackend)
    assert backend.tmp_dir == "/var/lib/triggerd/f/tmp"


def test_billed_gb_seconds_round_duration_up_to_the_millisecond() -> None:
    assert local.billed_gb_seconds(0.2, 1024) == pytest.approx(0.001)
    assert local.billed_gb_seconds(10.01, 512) == pytest.approx(11 * 0.5 / 1000)


def test_memory_texts_parse_resident_and_peak_sizes() -> None:
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    assert local_memory.statm_rss_kb(b"1000 250 30 1 0 100 0\n") == 250 * page_kb
    assert local_memory.statm_rss_kb(b"") == 0
    status = b"Name:\tpython\nVmPeak:\t 20000 kB\nVmHWM:\t   15320 kB\nVmRSS:\t 1 kB\n"
    assert local_memory.status_hwm_kb(status) == 15320
    assert local_memory.status_hwm_kb(b"Name: x\n") == 0


def test_memory_probe_reads_this_process() -> None:
    probe = local_memory.MemoryProbe(os.getpid())
    try:
        rss, hwm, tree = probe.rss_kb(), probe.hwm_kb(), probe.tree_rss_kb()
        assert 0 < rss <= hwm and tree >= rss
    finally:
        probe.close()
    assert probe.rss_kb() == 0 and probe.hwm_kb() == 0


def test_plugin_builds_a_local_backend_with_default_concurrency() -> None:
    ctx = BackendContext("f", SystemClock(), logging.getLogger("t"))
    backend = plugin.create(config(), ctx)
    assert plugin.config_model is LocalFunctionConfig
    assert isinstance(backend, LocalBackend) and backend.limit == 4


# --------------------------------------------------------------------------------------------
# Lambda's texts


def test_report_line_is_tab_separated_with_optional_init_duration() -> None:
    assert local.report_line("r", 1.234, 128, 40, None) == (
        "REPORT RequestId: r\tDuration: 1.23 ms\tBilled Duration: 2 ms\t"
        "Memory Size: 128 MB\tMax Memory Used: 40 MB\t"
    )
    assert local.report_line("r", 0.2, 256, 1, 118.851).endswith(
        "Billed Duration: 1 ms\tMemory Size: 256 MB\tMax Memory Used: 1 MB\t"
        "Init Duration: 118.85 ms\t"
    )


def test_exit_descriptions_and_messages_match_lambda() -> None:
    assert exit_description(3) == "exit status 3"
    assert exit_description(-9) == "signal: killed"
    assert exit_description(-15) == "signal: terminated"
    assert local.exit_error("r", "exit status 0") == (
        b'{"errorType":"Runtime.ExitError",'
        b'"errorMessage":"RequestId: r Error: Runtime exited without providing a reason"}'
    )


def test_client_context_accepts_json_or_base64_json() -> None:
    text = '{"custom": {"a": 1}}'
    assert local.client_context_header(text) == text
    assert local.client_context_header(base64.b64encode(text.encode()).decode()) == text
    assert local.client_context_header(None) is None


def test_log_capture_keeps_the_last_bytes_on_a_character_boundary() -> None:
    capture = LogCapture(limit=10)
    for line in ["first line", "é" * 3, "last"]:
        capture.add(line)
    tail = capture.tail()
    assert len(tail.encode()) <= 10 and tail.endswith("éé\nlast\n")


# --------------------------------------------------------------------------------------------
# Bundled runtime client


@pytest.mark.parametrize(
    ("spec", "error_type", "message"),
    [
        (
            "nodot",
            "Runtime.MalformedHandlerName",
            "Bad handler 'nodot': not enough values to unpack (expected 2, got 1)",
        ),
        ("sys.handler", "Runtime.BuiltInModuleConflict", "Cannot use built-in module sys"),
        ("no_such_mod_x.h", "Runtime.ImportModuleError", "Unable to import module"),
        ("json.no_such_func", "Runtime.HandlerNotFound", "Handler 'no_such_func' missing"),
    ],
)
def test_load_handler_reports_lambda_init_error_types(
    spec: str, error_type: str, message: str
) -> None:
    with pytest.raises(bootstrap.InitError) as caught:
        bootstrap.load_handler(spec)
    assert caught.value.error_type == error_type
    assert caught.value.message.startswith(message)


def test_load_handler_reports_syntax_and_module_level_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_syntax_mod.py").write_text("def f(:\n")
    (tmp_path / "raising_mod.py").write_text("raise RuntimeError('at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(bootstrap.InitError) as syntax:
        bootstrap.load_handler("broken_syntax_mod.f")
    assert syntax.value.error_type == "Runtime.UserCodeSyntaxError"
    assert syntax.value.message.startswith("Syntax error in module 'broken_syntax_mod'")
    with pytest.raises(bootstrap.InitError) as raising:
        bootstrap.load_handler("raising_mod.f")
    assert (raising.value.error_type, raising.value.message) == ("RuntimeError", "at import")
    assert any("raising_mod.py" in frame for frame in raising.value.stack)


def test_encoder_matches_lambda_python_output() -> None:
    enc = bootstrap.make_encoder("AWS_Lambda_python3.11")
    assert enc.encode({"a": [1, "é"], "n": None}) == '{"a": [1, "\\u00e9"], "n": null}'
    assert enc.encode({"int": decimal.Decimal("5"), "frac": decimal.Decimal("1.5")}) == (
        '{"int": 5, "frac": 1.5}'
    )
    assert bootstrap.make_encoder("AWS_Lambda_python3.12").encode("é") == '"é"'
    with pytest.raises(TypeError, match="Object of type datetime is not JSON serializable"):
        enc.encode(datetime.datetime(2024, 1, 1))


@pytest.mark.parametrize("large_bytes", [1, 1 << 30])
def test_event_decoder_handles_empty_nan_and_bad_payloads(large_bytes: int) -> None:
    decode = bootstrap.EventDecoder(large_bytes)
    assert decode(b"") == {}
    assert decode(b'{"a": [1, 2.5, "\\u00e9"]}') == {"a": [1, 2.5, "é"]}
    nan = decode(b"[NaN]")[0]
    assert nan != nan
    with pytest.raises(ValueError):
        decode(b"{nope")


def context(deadline_ms: int, client_context: str | None = None) -> bootstrap.LambdaContext:
    static = {
        "function_name": "f",
        "function_version": "$LATEST",
        "memory_limit_in_mb": "128",
        "log_group_name": "/aws/lambda/f",
        "log_stream_name": "s",
    }
    return bootstrap.LambdaContext(
        static, "r", deadline_ms, "arn", client_context, '{"cognitoIdentityId": "id-1"}', None
    )


def test_context_remaining_time_is_floored_at_zero_and_objects_are_parsed() -> None:
    ctx = context(0, '{"client": {"installation_id": "i"}, "custom": {"k": 1}, "env": {}}')
    assert ctx.get_remaining_time_in_millis() == 0
    assert ctx.memory_limit_in_mb == "128"
    assert ctx.identity.cognito_identity_id == "id-1"
    assert ctx.identity.cognito_identity_pool_id is None
    assert ctx.client_context is not None and ctx.client_context.client is not None
    assert ctx.client_context.client.installation_id == "i"
    assert ctx.client_context.custom == {"k": 1}
    assert context(0).client_context is None


def test_log_records_use_lambda_text_format() -> None:
    formatter = bootstrap._LambdaFormatter()
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "two\nlines", None, None)
    record.aws_request_id = "req-9"
    text = formatter.format(record)
    assert re.fullmatch(
        r"\[WARNING\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\treq-9\ttwo\rlines", text
    )


class FakeClient:
    def __init__(self, invocations: list[tuple[dict[str, str], bytes]]) -> None:
        self.invocations = invocations
        self.posts: list[tuple[str, bytes, str | None]] = []

    def next(self) -> tuple[dict[str, str], bytes]:
        return self.invocations.pop(0)

    def post_and_next(
        self,
        path: str,
        body: bytes,
        error_type: str | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        self.posts.append((path, body, error_type))
        if meanwhile is not None:
            meanwhile()
        return self.invocations.pop(0) if self.invocations else ({}, b"")


def test_runtime_sets_and_unsets_trace_id_per_invocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bootstrap, "setup_logging", bootstrap._RequestIdFilter)
    monkeypatch.setattr(bootstrap, "end_of_output", lambda: None)
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    seen: list[str | None] = []

    def handler(event: Any, ctx: Any) -> Any:
        seen.append(os.environ.get("_X_AMZN_TRACE_ID"))
        if event.get("fail"):
            raise KeyError("k")
        return event

    with_trace = {"lambda-runtime-aws-request-id": "a", "lambda-runtime-trace-id": "Root=1-x"}
    client = FakeClient(
        [(with_trace, b'{"x": 1}'), ({"lambda-runtime-aws-request-id": "b"}, b'{"fail": 1}')]
    )
    runtime = bootstrap.Runtime(client, handler, bootstrap.make_encoder(""))  # type: ignore[arg-type]
    runtime.serve_one(runtime.serve_one(client.next()))
    assert seen == ["Root=1-x", None]
    assert client.posts[0] == ("/invocation/a/response", b'{"x": 1}', None)
    path, body, error_type = client.posts[1]
    assert (path, error_type) == ("/invocation/b/error", "KeyError")
    assert body.startswith(b'{"errorMessage": "\'k\'", "errorType": "KeyError", "requestId": "b"')


async def test_runtime_client_reads_chunked_and_closed_connections() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Lambda-Runtime-Aws-Request-Id": "c1"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"a": ')
        await resp.write(b"1}")
        await resp.write_eof()
        return resp

    async def closing(request: web.Request) -> web.Response:
        return web.Response(body=b"bye", headers={"Connection": "close"})

    app = web.Application()
    app.router.add_get("/2018-06-01/runtime/invocation/next", chunked)
    app.router.add_post("/closing", closing)
    async with TestServer(app) as server:
        client = bootstrap.RuntimeClient(f"127.0.0.1:{server.port}")
        try:
            headers, body = await asyncio.to_thread(client.next)
            assert (headers["lambda-runtime-aws-request-id"], body) == ("c1", b'{"a": 1}')
            status, _, data = await asyncio.to_thread(client.request, "POST", "/closing", b"x")
            assert (status, data) == (200, b"bye")
            headers, body = await asyncio.to_thread(client.next)  # reconnects by itself
            assert body == b'{"a": 1}'
        finally:
            client.close()


def test_the_runtime_boto3_is_one_the_runtime_s_python_can_install() -> None:
    # boto3 1.43 needs Python 3.10: python3.9 gets the last release that supports it.
    assert config(runtime="python3.9").runtime_boto3 == "1.42.97"
    assert config(runtime="python3.12").runtime_boto3 == DEFAULT_BOTO3_VERSION
    assert config(runtime="python3.9", boto3_version="1.40.0").runtime_boto3 == "1.40.0"


async def test_the_runtime_of_triggerds_own_python_is_found_without_starting_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No probe (a pyenv shim on PATH is some 60 processes of bash): the interpreter
    triggerd runs on, its real executable rather than a virtualenv's link to it."""
    import asyncio
    import os
    import sys

    from triggerd.functions.backends import local_python

    async def no_probe(path: str) -> None:
        raise AssertionError(f"probed {path}")

    monkeypatch.setattr(local_python, "probe", no_probe)
    own = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = await local_python.InterpreterFinder().find(own)
    assert found.path == await asyncio.to_thread(os.path.realpath, sys.executable)
    assert found.version == own.removeprefix("python")
