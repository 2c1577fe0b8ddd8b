"""Session fixtures for real servers: moto_server (S3, SQS, Kinesis, DynamoDB Streams) and a
tansu Kafka broker on free loopback ports, and the machine's RabbitMQ. Servers are started by
PID and always stopped. Also `store`: a fresh SQLite state store per test."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from triggerd.state.sqlite import SQLiteStateStore

if TYPE_CHECKING:
    from bench.harness import TansuBroker

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _serve_or_fail(server: AbstractContextManager[T]) -> Iterator[T]:
    """A server the benchmarks' harness runs, for as long as the fixture lives; when it cannot
    start, the tests that need it fail with the reason."""
    from bench import BenchError

    try:
        with server as running:
            yield running
    except BenchError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session", autouse=True)
def runtimes_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One directory for the packages Python runtimes provide (boto3, awslambdaric), for the
    whole session (and the daemons it starts): each is installed from the registry once.
    A TRIGGERD_RUNTIMES_DIR already set is kept (a cache across sessions)."""
    path = os.environ.get("TRIGGERD_RUNTIMES_DIR") or str(tmp_path_factory.mktemp("runtimes"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRIGGERD_RUNTIMES_DIR", path)
        yield path


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto_server that lives for the whole test session."""
    from bench.harness import moto_server as launch

    yield from _serve_or_fail(launch(tmp_path_factory.mktemp("moto") / "moto.log"))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A Kafka-compatible broker (tansu, memory storage) for the whole test session."""
    from bench.harness import tansu_broker

    yield from _serve_or_fail(tansu_broker(tmp_path_factory.mktemp("tansu") / "tansu.log"))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region for aiobotocore clients against moto."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The machine's RabbitMQ (started before every session and CI run)."""
    host = os.environ.get("TRIGGERD_TEST_RABBITMQ_HOST", "127.0.0.1")
    port = int(os.environ.get("TRIGGERD_TEST_RABBITMQ_PORT", "5672"))
    deadline = time.monotonic() + 20
    while not port_open(host, port):
        if time.monotonic() > deadline:
            pytest.fail(
                f"RabbitMQ is not listening on {host}:{port}; start it with "
                "`rabbitmq-server -detached`"
            )
        time.sleep(0.5)
    return f"amqp://guest:guest@{host}:{port}/"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStateStore]:
    """A fresh SQLite state store in the test's temp dir."""
    state = SQLiteStateStore(str(tmp_path / "state.db"))
    await state.open()
    yield state
    await state.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster with wal_level = logical for the whole test session
    (initdb as an unprivileged user, a free port, stopped by PID at the end)."""
    from bench import BenchError
    from bench.postgres_cluster import postgres_cluster

    try:
        with postgres_cluster() as cluster:
            yield cluster
    except BenchError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def pg_cluster_small_wal_keep() -> Iterator[Any]:
    """Another throwaway cluster, whose slots the server invalidates once they fall 1 MB of
    WAL behind (`max_slot_wal_keep_size`): not `pg_cluster`, whose slots must never be."""
    from bench import BenchError
    from bench.postgres_cluster import postgres_cluster

    try:
        with postgres_cluster({"max_slot_wal_keep_size": "1MB"}) as cluster:
            yield cluster
    except BenchError as exc:
        pytest.fail(str(exc))
