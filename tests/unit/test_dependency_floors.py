"""What the dependency floors in pyproject.toml are for, checked offline so that the floors run
(.ci/floors: the unit tests at the lowest allowed versions) proves each one.

aio-pika >= 10.1: before 10.1, `aio_pika.connect(url, client_properties=...)` dropped the client
properties when given a URL, so the connection name never reached the broker. The fake broker
below speaks just enough AMQP 0-9-1 (frames encoded by pamqp, aiormq's own codec) to read the
Connection.StartOk the client sends, which carries those properties."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from triggerd.types import RetryableError

pytest.importorskip("aio_pika")

from pamqp import commands, frame
from pamqp.exceptions import UnmarshalingException

from triggerd_rabbitmq.config import AmqpSettings
from triggerd_rabbitmq.connection import import_aio_pika, open_connection


class FakeBroker:
    """Accepts one AMQP handshake, records the client's StartOk, then hangs up."""

    def __init__(self) -> None:
        self.start_ok: asyncio.Future[commands.Connection.StartOk] = (
            asyncio.get_running_loop().create_future()
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(8)  # the protocol header, AMQP\x00\x00\x09\x01
            start = commands.Connection.Start(
                server_properties={"product": "fake"}, mechanisms="PLAIN", locales="en_US"
            )
            writer.write(frame.marshal(start, 0))
            await writer.drain()
            data = b""
            while not self.start_ok.done():
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
                try:
                    _, _, value = frame.unmarshal(data)
                except UnmarshalingException:
                    continue  # a partial frame: wait for the rest
                if isinstance(value, commands.Connection.StartOk):
                    self.start_ok.set_result(value)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up
        finally:
            writer.close()


@pytest.fixture
async def broker() -> AsyncIterator[tuple[FakeBroker, int]]:
    fake = FakeBroker()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield fake, port


async def test_aio_pika_passes_the_connection_name_to_the_broker_with_a_url(
    broker: tuple[FakeBroker, int],
) -> None:
    fake, port = broker
    settings = AmqpSettings(url=f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout_s=5)
    with pytest.raises(RetryableError):  # the fake hangs up after the StartOk
        await open_connection(import_aio_pika(), settings, "triggerd:orders")
    start_ok = await asyncio.wait_for(fake.start_ok, 5)
    assert start_ok.client_properties["connection_name"] == "triggerd:orders"


# The other floors: each test calls the client library the way triggerd does, offline, so the
# floors run fails when a floor is below the release that API needs.


async def test_aiobotocore_client_as_the_aws_helper_opens_it() -> None:
    # aiobotocore >= 2.13: AioSession(profile=...), AioConfig with retry modes and pool size.
    from contextlib import AsyncExitStack

    from triggerd.config.aws import error_code, error_message, open_client

    async with AsyncExitStack() as stack:
        client = await open_client(
            stack,
            "lambda",
            extra="aws",
            needed_by="test",
            region="eu-west-1",
            endpoint_url="http://127.0.0.1:1",
            credentials={"aws_access_key_id": "AKID", "aws_secret_access_key": "x"},
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=33,
            max_pool_connections=7,
        )
        assert client.meta.region_name == "eu-west-1"
        assert (client.meta.config.read_timeout, client.meta.config.max_pool_connections) == (
            33,
            7,
        )
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "Invoke")
    assert (error_code(exc), error_message(exc)) == ("Throttling", "slow down")


async def test_aiokafka_consumer_takes_the_connection_settings_and_errors_classify() -> None:
    # aiokafka >= 0.11: the consumer's keyword arguments and the error classes classify() names.
    from triggerd_kafka.client import classify, client_kwargs, import_aiokafka
    from triggerd_kafka.config import KafkaConnection

    aiokafka = import_aiokafka()
    cfg = KafkaConnection(bootstrap_servers=["127.0.0.1:1"])
    consumer = aiokafka.AIOKafkaConsumer(
        **client_kwargs(cfg, "triggerd:t"), enable_auto_commit=False, group_id="g"
    )
    await consumer.stop()  # never started: nothing to close, but the call must exist
    assert isinstance(classify(aiokafka.errors.SaslAuthenticationFailed(), cfg), Exception)
    assert type(classify(aiokafka.errors.KafkaConnectionError(), cfg)).__name__ == (
        "RetryableError"
    )


async def test_asyncpg_connect_with_the_postgres_sources_settings() -> None:
    # asyncpg >= 0.29: connect() with server_settings, statement_cache_size and timeout; an
    # unreachable server is a RetryableError, not an asyncpg exception.
    from triggerd_postgres.config import Connection
    from triggerd_postgres.server import connect

    with pytest.raises(RetryableError):
        await connect(Connection(host="127.0.0.1", port=1), "t", "test")


async def test_watchfiles_awatch_with_the_directory_sources_arguments(tmp_path: object) -> None:
    # watchfiles >= 0.21: awatch with stop_event, step, recursive, ignore_permission_denied.
    from pathlib import Path

    import watchfiles

    root = Path(str(tmp_path))
    stop = asyncio.Event()

    async def first_change() -> set[tuple[object, str]]:
        async for changes in watchfiles.awatch(
            root,
            watch_filter=None,
            debounce=100,
            step=20,
            stop_event=stop,
            recursive=True,
            force_polling=False,
            ignore_permission_denied=True,
        ):
            return set(changes)
        return set()

    task = asyncio.create_task(first_change())
    for _ in range(100):  # until the watcher sees a file written after it started
        (root / "a.txt").write_text("x")
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            break
    stop.set()
    assert any(path.endswith("a.txt") for _, path in await task)


def test_uvloop_run_as_the_cli_uses_it() -> None:
    # uvloop >= 0.19 (0.18 added uvloop.run, which `triggerd run` calls).
    uvloop = pytest.importorskip("uvloop")

    async def answer() -> int:
        return 42

    assert uvloop.run(answer()) == 42


def test_awslambdaric_runs_as_a_module() -> None:
    # awslambdaric >= 2.2: workers start `python -m awslambdaric HANDLER`.
    import importlib.util

    pytest.importorskip("awslambdaric")
    assert importlib.util.find_spec("awslambdaric.__main__") is not None


async def test_opentelemetry_exports_spans_as_the_tracer_makes_them() -> None:
    """otel >= 1.20: TracerProvider, BatchSpanProcessor and OTLPSpanExporter(endpoint=,
    headers=, timeout=) as triggerd.telemetry.otel uses them, posting to a loopback receiver."""
    pytest.importorskip("opentelemetry.sdk.trace")
    from aiohttp import web

    from triggerd.telemetry.otel import OtelTracer

    posts: list[tuple[str | None, str | None, int]] = []

    async def export(request: web.Request) -> web.Response:
        body = await request.read()
        posts.append(
            (request.headers.get("Content-Type"), request.headers.get("X-Token"), len(body))
        )
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        tracer = OtelTracer.otlp(
            endpoint=f"http://127.0.0.1:{port}/v1/traces",
            headers={"X-Token": "t"},
            service_name="floors",
        )
        header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        batch = tracer.batch(trigger="t", function="f", source_type="sqs", records=1, trace=header)
        with batch, tracer.invocation(function="f", trace=header, request_id="r") as span:
            to_function = span.trace_header(header)
            span.finish("ok", "r")
        assert to_function is not None and to_function.startswith("Root=1-5759e988-bd862e3f")
        await tracer.shutdown()
    finally:
        await runner.cleanup()
    assert posts and posts[0][:2] == ("application/x-protobuf", "t") and posts[0][2] > 0


def test_rich_table_console_and_progress_as_the_cli_uses_them() -> None:
    # rich >= 13.7: Table(box=None), a Console of fixed width writing to a file (the plain
    # output of a pipe), Progress with MofNCompleteColumn (dlq replay); proved.
    import io

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    table = Table(box=None, show_edge=False, pad_edge=False)
    table.add_column("id", overflow="fold")
    table.add_row("x" * 300)
    out = io.StringIO()
    Console(file=out, width=100_000, no_color=True, soft_wrap=True).print(table)
    assert out.getvalue().split() == ["id", "x" * 300]
    with Progress(TextColumn("t"), BarColumn(), MofNCompleteColumn(), disable=True) as progress:
        task = progress.add_task("t", total=2)
        progress.advance(task)
        assert progress.tasks[0].completed == 1


def test_cryptography_verifies_sns_signatures_as_the_sns_http_source_does() -> None:
    """cryptography >= 42: `not_valid_before_utc` / `not_valid_after_utc`, PKCS#1 v1.5 with
    SHA-1 (SignatureVersion 1) and SHA-256 (2)."""
    import base64
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    from triggerd_sns_http.signature import VerificationError, string_to_sign, verify

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    for version, algorithm in (("1", hashes.SHA1()), ("2", hashes.SHA256())):
        doc = {
            "Type": "Notification",
            "MessageId": "m",
            "TopicArn": "t",
            "Message": "x",
            "Timestamp": "ts",
            "SignatureVersion": version,
        }
        sig = key.sign(string_to_sign(doc), padding.PKCS1v15(), algorithm)
        doc["Signature"] = base64.b64encode(sig).decode()
        verify(doc, pem)
        with pytest.raises(VerificationError):
            verify({**doc, "Message": "y"}, pem)
        with pytest.raises(VerificationError):
            verify(doc, pem, now=(now + datetime.timedelta(days=1)).timestamp())


def test_pybase64_encodes_kafka_values_straight_to_a_str() -> None:
    # pybase64 >= 1.2.3: b64encode_as_string, which the kafka shape uses when installed.
    pytest.importorskip("pybase64")
    from pybase64 import b64encode_as_string

    from triggerd_kafka.shape import _b64

    assert _b64 is b64encode_as_string
    assert b64encode_as_string(b"\x00\xff\x10") == "AP8Q"
