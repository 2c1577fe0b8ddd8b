"""`triggerd validate` as a subprocess: every problem in one run (fields, references, paths),
the shipped configs, and `--connect` against real servers (RabbitMQ, moto's SQS and S3, a
Kafka-compatible broker) and against one that is not there."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.triggerd_cli import triggerd_cli
from triggerd.types import ExitCode

ROOT = Path(__file__).parents[2]
SHIPPED = sorted([*ROOT.glob("config/*.toml"), *ROOT.glob("examples/*.toml")])


def validate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return triggerd_cli(cwd, "validate", *args, env=keys, timeout=120)


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates_with_its_paths(config: Path, tmp_path: Path) -> None:
    out = validate(tmp_path, str(config))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{config}: ok ")


def test_field_reference_and_path_problems_come_in_one_run(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        """
[daemon]
listen = ""

[functions.f]
handler = "app.handler"
code = "missing-code"
timeout_s = 0

[[triggers]]
function = "nope"
source = { type = "directory", path = "missing-dir" }
"""
    )
    out = validate(tmp_path, str(cfg))
    assert out.returncode == ExitCode.CONFIG_INVALID
    lines = out.stderr.splitlines()
    assert any(line.startswith(f"{cfg}: functions.f.timeout_s: ") for line in lines), lines
    assert f"{cfg}: triggers.0.function: no function 'nope'" in lines
    assert (
        f"{cfg}: functions.f.code: {tmp_path}/missing-code is not a directory or a .zip file"
        in lines
    )
    assert f"{cfg}: triggers.0.source.path: {tmp_path}/missing-dir does not exist" in lines
    assert len(lines) == 4, lines
    assert "Traceback" not in out.stderr
    skipped = validate(tmp_path, str(cfg), "--skip-paths")
    assert skipped.returncode == ExitCode.CONFIG_INVALID
    assert len(skipped.stderr.splitlines()) == 2, "the paths left out"
    cfg.write_text(cfg.read_text().replace("timeout_s = 0", "").replace('"nope"', '"f"'))
    assert validate(tmp_path, str(cfg), "--skip-paths").returncode == 0


def test_validate_refuses_what_run_cannot_use_a_bad_certificate_and_work_dir(
    tmp_path: Path,
) -> None:
    (tmp_path / "fn").mkdir()
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    (tmp_path / "a-file").write_text("")
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        """
[daemon]
listen = ""
tls_cert_file = "not-a-cert.pem"
work_dir = "a-file"

[functions.f]
handler = "app.handler"
code = "fn"
"""
    )
    out = validate(tmp_path, str(cfg))
    assert out.returncode == ExitCode.CONFIG_INVALID, out.stderr
    lines = out.stderr.splitlines()
    assert f"{cfg}: daemon.work_dir: {tmp_path}/a-file is not a directory" in lines, lines
    assert any(
        line.startswith(
            f"{cfg}: daemon.tls_cert_file: {tmp_path}/not-a-cert.pem cannot be loaded as a PEM "
            "certificate and key: "
        )
        for line in lines
    ), lines
    assert len(lines) == 2, lines


def connect_config(tmp_path: Path, *sources: tuple[str, str]) -> Path:
    (tmp_path / "fn").mkdir(exist_ok=True)
    text = '[daemon]\nlisten = ""\n\n[functions.f]\nhandler = "app.handler"\ncode = "fn"\n'
    for name, source in sources:
        text += f'\n[[triggers]]\nname = "{name}"\nfunction = "f"\nsource = {source}\n'
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    return cfg


async def declare_queue(url: str, name: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        channel = await conn.channel()
        await channel.declare_queue(name, auto_delete=True, arguments={"x-expires": 60_000})


def test_connect_reports_each_trigger_and_exits_11_when_one_is_unreachable(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    queue = f"validate-{uuid.uuid4().hex[:8]}"
    asyncio.run(declare_queue(rabbitmq_url, queue))
    closed = free_port()
    cfg = connect_config(
        tmp_path,
        ("rabbit", f'{{ type = "rabbitmq", url = "{rabbitmq_url}", queue = "{queue}" }}'),
        (
            "gone",
            f'{{ type = "sqs", queue_url = "http://127.0.0.1:{closed}/123456789012/q", '
            'region = "us-east-1" }',
        ),
    )
    out = validate(tmp_path, str(cfg), "--connect", "--timeout", "5")
    assert out.returncode == ExitCode.SOURCE_UNREACHABLE, out.stderr
    lines = out.stderr.splitlines()
    assert f"{cfg}: trigger 'rabbit' (rabbitmq): connected, ok" in lines
    [gone] = [line for line in lines if "trigger 'gone'" in line]
    assert gone.startswith(f"{cfg}: trigger 'gone' (sqs): not reachable: "), gone
    assert "guest:guest" not in out.stderr, "no password in the output"
    offline = validate(tmp_path, str(cfg))
    assert offline.returncode == 0, "without --connect no server is contacted"
    useless = validate(tmp_path, str(cfg), "--timeout", "5")
    assert useless.returncode == 2 and "--timeout applies to --connect only" in useless.stderr


def test_connect_prints_only_its_own_lines_when_a_broker_refuses(tmp_path: Path) -> None:
    closed = free_port()
    cfg = connect_config(
        tmp_path,
        (
            "rabbit",
            f'{{ type = "rabbitmq", url = "amqp://guest:guest@127.0.0.1:{closed}/", queue = "q" }}',
        ),
    )
    out = validate(tmp_path, str(cfg), "--connect", "--timeout", "5")
    assert out.returncode == ExitCode.SOURCE_UNREACHABLE, out.stderr
    [line] = out.stderr.splitlines()  # no client library's log line beside it
    assert line.startswith(f"{cfg}: trigger 'rabbit' (rabbitmq): not reachable: "), line


def test_connect_names_what_the_servers_refuse(
    tmp_path: Path, rabbitmq_url: str, moto_server: str, kafka_broker: object
) -> None:
    bootstrap = kafka_broker.bootstrap  # type: ignore[attr-defined]
    queue_url = _create_sqs_queue(moto_server, f"validate-{uuid.uuid4().hex[:8]}")
    cfg = connect_config(
        tmp_path,
        ("ok-sqs", f'{{ type = "sqs", queue_url = "{queue_url}", region = "us-east-1" }}'),
        (
            "no-queue",
            f'{{ type = "sqs", queue_url = "{moto_server}/123456789012/nope-{uuid.uuid4().hex}",'
            ' region = "us-east-1" }',
        ),
        (
            "no-bucket",
            f'{{ type = "s3", bucket = "nope-{uuid.uuid4().hex[:12]}", '
            f'endpoint_url = "{moto_server}", path_style = true }}',
        ),
        ("no-rabbit-queue", f'{{ type = "rabbitmq", url = "{rabbitmq_url}", queue = "nope-q" }}'),
        (
            "no-topic",
            f'{{ type = "kafka", bootstrap_servers = "{bootstrap}", topics = ["nope-t"], '
            'group_id = "g" }',
        ),
        ("files", '{ type = "directory", path = "fn" }'),
    )
    out = validate(tmp_path, str(cfg), "--connect", "--timeout", "20")
    assert out.returncode == ExitCode.CONFIG_INVALID, out.stderr
    lines = [line.removeprefix(f"{cfg}: ") for line in out.stderr.splitlines()]
    assert "trigger 'ok-sqs' (sqs): connected, ok" in lines
    assert "trigger 'files' (directory): nothing to connect to" in lines
    for name in ("no-queue", "no-bucket", "no-rabbit-queue", "no-topic"):
        assert any(line.startswith(f"trigger {name!r} ") and "problem" in line for line in lines)
    assert any("no-queue" in line and "NonExistentQueue" in line for line in lines), lines
    assert any(
        line.startswith("trigger 'no-bucket': source.bucket nope-")
        and line.endswith(": 404: the bucket does not exist")
        for line in lines
    ), lines
    assert any("queue 'nope-q' does not exist" in line for line in lines), lines
    assert "trigger 'no-topic': source.topics: topic 'nope-t' does not exist" in lines


def test_connect_checks_in_the_daemons_region_when_the_source_names_none(
    tmp_path: Path, moto_server: str
) -> None:
    # moto keys queues by the signing region, as AWS does: a check signed for us-east-1
    # would not find this queue.
    queue_url = _create_sqs_queue(moto_server, f"validate-{uuid.uuid4().hex[:8]}", "eu-west-3")
    cfg = connect_config(tmp_path, ("paris", f'{{ type = "sqs", queue_url = "{queue_url}" }}'))
    cfg.write_text(cfg.read_text().replace("[daemon]\n", '[daemon]\nregion = "eu-west-3"\n'))
    out = validate(tmp_path, str(cfg), "--connect", "--timeout", "20")
    assert out.returncode == 0, out.stderr
    assert f"{cfg}: trigger 'paris' (sqs): connected, ok" in out.stderr.splitlines()


def test_connect_refuses_a_queue_whose_visibility_timeout_is_zero(
    tmp_path: Path, moto_server: str
) -> None:
    """`run` refuses it at start (exit 2): `validate --connect` said "connected, ok"."""
    queue_url = _create_sqs_queue(
        moto_server, f"validate-{uuid.uuid4().hex[:8]}", VisibilityTimeout="0"
    )
    zero = f'{{ type = "sqs", queue_url = "{queue_url}", region = "us-east-1" }}'
    cfg = connect_config(tmp_path, ("zero", zero))
    out = validate(tmp_path, str(cfg), "--connect", "--timeout", "20")
    assert out.returncode == ExitCode.CONFIG_INVALID, out.stderr
    assert "VisibilityTimeout is 0" in out.stderr, out.stderr
    set_it = zero.replace(" }", ", visibility_timeout_s = 30 }")
    cfg = connect_config(tmp_path, ("zero", set_it))
    out = validate(tmp_path, str(cfg), "--connect", "--timeout", "20")
    assert out.returncode == 0, out.stderr


def _create_sqs_queue(
    endpoint: str, name: str, region: str = "us-east-1", **attributes: str
) -> str:
    import boto3

    client = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return str(client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def test_run_names_every_missing_path_at_once_and_creates_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        """
[daemon]
state = "sqlite:///state/state.db"
listen = ""

[functions.f]
handler = "app.handler"
code = "missing-code"

[[triggers]]
function = "f"
source = { type = "directory", path = "missing-dir" }
"""
    )
    out = subprocess.run(
        [sys.executable, "-m", "triggerd", "run", str(cfg)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == ExitCode.CONFIG_INVALID
    assert out.stderr.splitlines() == [
        f"{cfg}: functions.f.code: {tmp_path}/missing-code is not a directory or a .zip file",
        f"{cfg}: triggers.0.source.path: {tmp_path}/missing-dir does not exist",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.toml"], "no state store created"
