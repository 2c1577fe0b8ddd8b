"""The daemon as a subprocess with s3 triggers on moto_server: kill -9 mid-way, a poison object,
notifications end to end, and credentials kept out of the logs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_env")]

SECRET = "wJalrXUtnFEMI-DAEMON-SECRET-KEY"


def config(tmp: Path, source: str, *, sleep_s: float = 0, concurrency: int = 2) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{free_port()}"
control_listen = ""
shutdown_timeout_s = 5
log_format = "json"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
reserved_concurrency = {concurrency}
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}", SLEEP_S = "{sleep_s}" }}

[[triggers]]
name = "bucket"
function = "recorder"
source = {{ {source}, aws_access_key_id = "testing", aws_secret_access_key = "{SECRET}" }}
maximum_concurrency = {concurrency}
retry_base_delay_s = 0.2
on_failure = {{ type = "file", path = "dlq.jsonl" }}
"""


def poll_source(endpoint: str, bucket: str) -> str:
    return (
        f'type = "s3", mode = "poll", bucket = "{bucket}", endpoint_url = "{endpoint}", '
        'poll_interval_s = 0.2, starting_position = "TRIM_HORIZON"'
    )


def clients(endpoint: str) -> tuple[Any, Any]:
    kw: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    return boto3.client("s3", **kw), boto3.client("sqs", **kw)


def delivered(tmp: Path) -> list[str]:
    path = tmp / "calls.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]
    return [r["s3"]["object"]["key"] for c in lines for r in c["event"]["Records"]]


def dead_letters(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "dlq.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def assert_secret_not_logged(d: Daemon) -> None:
    assert SECRET not in d.stdout() + d.stderr()


def test_kill9_mid_way_then_restart_delivers_every_object(
    tmp_path: Path, moto_server: str, daemon_factory: Any
) -> None:
    s3, _ = clients(moto_server)
    bucket = f"kill-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    keys = [f"obj {i:02d}.txt" for i in range(12)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    d: Daemon = daemon_factory(config(tmp_path, poll_source(moto_server, bucket), sleep_s=0.3))
    d.start()
    wait_for(lambda: len(delivered(tmp_path)) >= 3, 30, "some deliveries before the kill")
    d.kill9()
    assert len(set(delivered(tmp_path))) < len(keys)
    s3.put_object(Bucket=bucket, Key="added while down", Body=b"x")
    d.start()
    want = {k.replace(" ", "+") for k in [*keys, "added while down"]}
    wait_for(lambda: set(delivered(tmp_path)) >= want, 60, "every object after the restart")
    assert d.terminate() == 0
    assert_secret_not_logged(d)


def test_poison_object_goes_to_the_file_destination_and_others_are_delivered(
    tmp_path: Path, moto_server: str, daemon_factory: Any
) -> None:
    s3, _ = clients(moto_server)
    bucket = f"poison-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    for key in ("ok-1", "poison-pill", "ok-2"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    d: Daemon = daemon_factory(config(tmp_path, poll_source(moto_server, bucket)))
    d.start()
    wait_for(lambda: len(dead_letters(tmp_path)) == 1, 40, "the poison object's dead letter")
    wait_for(lambda: set(delivered(tmp_path)) == {"ok-1", "ok-2"}, 60, "the good objects")
    [letter] = dead_letters(tmp_path)
    assert letter["requestContext"]["condition"] == "RetriesExhausted"
    assert letter["requestContext"]["approximateInvokeCount"] == 3
    [record] = letter["requestPayload"]["Records"]
    assert record["s3"]["object"]["key"] == "poison-pill"
    assert letter["responsePayload"]["errorType"] == "ValueError"
    assert d.terminate() == 0
    assert_secret_not_logged(d)


def test_notifications_mode_end_to_end(
    tmp_path: Path, moto_server: str, daemon_factory: Any
) -> None:
    s3, sqs = clients(moto_server)
    bucket = f"notify-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    source = (
        f'type = "s3", mode = "notifications", bucket = "{bucket}", '
        f'endpoint_url = "{moto_server}", queue_url = "{queue_url}", wait_time_s = 1'
    )
    d: Daemon = daemon_factory(config(tmp_path, source))
    d.start()
    s3.put_object(Bucket=bucket, Key="hello world.txt", Body=b"hi")
    wait_for(lambda: len(delivered(tmp_path)) == 1, 60, "the notification's invocation")
    assert delivered(tmp_path)[0].replace("%2F", "/") == "hello+world.txt"
    assert d.terminate() == 0
    assert_secret_not_logged(d)
