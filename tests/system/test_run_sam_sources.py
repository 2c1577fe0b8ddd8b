"""`triggerd run --sam` as a subprocess, one event end to end per asynchronous and broker
source of a SAM template, all served by ONE daemon: an S3 bucket on moto_server (poll mode,
its key filter rules) and one the overrides map to a local directory, Schedule events (one
with an `Input`) and a ScheduleV2 firing every second, an EventBridgeRule on a custom bus and
a CloudWatchEvent on the default bus (boto3's `put_events` against the control listener),
and an MQ (RabbitMQ) queue on the machine's broker with its BatchSize and FilterCriteria.
Each function is the system tests' recorder, which writes every event it gets to its own
file; the tests assert the delivered shapes. The last two do the same for a serverless.yml's
s3, schedule, eventBridge and rabbitmq events, then its sqs and sns events, with
`run --serverless`."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.system.conftest import FUNCTIONS, free_port, wait_for
from tests.system.sam_support import daemon_overrides, recorded, start_with_overrides, stop

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_env")]
pytest.importorskip("cfnlint")

REGION = "eu-west-3"
ACCOUNT = "123456789012"
KEY_ID = "SAMSRCKEY"
SECRET = "sam-sources-secret-0123456789"

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  RecordDir:
    Type: String
  BucketName:
    Type: String
  QueueName:
    Type: String
Globals:
  Function:
    Runtime: python3.11
    CodeUri: recorder/
    Handler: app.handler
    Timeout: 10
Resources:
  Uploads:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Ref BucketName
  Thumbnails:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/s3.jsonl"
      Events:
        Upload:
          Type: S3
          Properties:
            Bucket: !Ref Uploads
            Events: s3:ObjectCreated:*
            Filter:
              S3Key:
                Rules:
                  - {Name: prefix, Value: in/}
                  - {Name: suffix, Value: .txt}
  Drops:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: drops
  Gallery:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/directory.jsonl"
      Events:
        Dropped:
          Type: S3
          Properties:
            Bucket: !Ref Drops
            Events: [s3:ObjectCreated:*]
            Filter:
              S3Key:
                Rules:
                  - {Name: suffix, Value: .jpg}
  Ticker:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/schedule.jsonl"
      Events:
        Tick:
          Type: Schedule
          Properties:
            Schedule: rate(1 second)
            Name: tick-rule
        Job:
          Type: Schedule
          Properties:
            Schedule: rate(1 second)
            Input: '{"job": "nightly", "size": 3}'
        TickV2:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(1 second)
            Name: tick-v2
  Orders:
    Type: AWS::Events::EventBus
    Properties:
      Name: orders
  OrderHandler:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/bus.jsonl"
      Events:
        Big:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Orders
            Pattern:
              source: [com.shop]
              detail-type: [Order Placed]
              detail:
                amount: [{numeric: [">", 100]}]
        Audit:
          Type: CloudWatchEvent
          Properties:
            Pattern:
              source: [com.audit]
            InputPath: $.detail
  Broker:
    Type: AWS::AmazonMQ::Broker
    Properties:
      BrokerName: shop
      EngineType: RABBITMQ
  Consumer:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/mq.jsonl"
      Events:
        Queue:
          Type: MQ
          Properties:
            Broker: !GetAtt Broker.Arn
            Queues: [!Ref QueueName]
            BatchSize: 2
            MaximumBatchingWindowInSeconds: 1
            FilterCriteria:
              Filters:
                - Pattern: '{"data": {"kind": ["order"]}}'
"""


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    control: int
    dir: Path
    bucket: str
    queue: str


def declare_and_publish(url: str, queue: str, bodies: list[bytes]) -> None:
    async def go() -> None:
        import aio_pika

        connection = await aio_pika.connect_robust(url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(queue, durable=True)
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(body=body, content_type="application/json"),
                    routing_key=queue,
                )

    asyncio.run(go())


def delete_queue(url: str, queue: str) -> None:
    async def go() -> None:
        import aio_pika

        connection = await aio_pika.connect_robust(url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)

    asyncio.run(go())


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, moto_server: str, rabbitmq_url: str
) -> Iterator[Run]:
    """One `triggerd run --sam` for every test of the module."""
    tmp = tmp_path_factory.mktemp("sam-sources")
    shutil.copytree(FUNCTIONS / "recorder", tmp / "recorder")
    (tmp / "template.yaml").write_text(TEMPLATE)
    (tmp / "drops").mkdir()
    suffix = uuid.uuid4().hex[:10]
    bucket, queue = f"sam-src-{suffix}", f"sam-src-{suffix}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=bucket)
    declare_and_publish(rabbitmq_url, queue, [])  # the source checks that it exists
    control = free_port()
    access_key = (
        f"  access_keys:\n    - {{access_key_id: {KEY_ID}, secret_access_key: {SECRET}, "
        'actions: ["events:PutEvents"]}\n'
    )
    overrides = daemon_overrides(tmp, free_port(), control, access_key) + (
        f"endpoint_url: {moto_server}\n"
        f"region: us-east-1\n"
        f"resources:\n  Broker:\n    url: {rabbitmq_url}\n"
        # A bucket as a local directory (files present at start-up delivered too).
        "  Drops: {type: directory, path: drops, starting_position: TRIM_HORIZON}\n"
        # Poll the bucket often, and deliver what is put right after start-up too.
        "triggers:\n  Thumbnails-Upload:\n"
        "    source: {poll_interval_s: 0.2, starting_position: TRIM_HORIZON}\n"
        f'parameters:\n  RecordDir: "{tmp}"\n  BucketName: {bucket}\n  QueueName: {queue}\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRIGGERD_TEST_SECOND_RATES", "1")  # allows rate(1 second)
        # As the aws_env fixture, which is per test: this daemon serves the whole module.
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        args = ("--parameter-overrides", f"AWS::Region={REGION}", "--no-watch")
        proc = start_with_overrides(tmp, overrides, "sam", "template.yaml", *args)
    try:
        yield Run(proc, control, tmp, bucket, queue)
    finally:
        stop(proc)
        delete_queue(rabbitmq_url, queue)


def test_s3_event_delivers_the_object_created_record_of_a_key_its_rules_match(
    run: Run, moto_server: str
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    for key in ("out/skipped.txt", "in/skipped.csv", "in/photo 1.txt"):
        s3.put_object(Bucket=run.bucket, Key=key, Body=b"hello")
    path = run.dir / "s3.jsonl"

    def keys() -> list[str]:
        return [r["s3"]["object"]["key"] for e in recorded(path) for r in e["Records"]]

    wait_for(lambda: keys() != [], 30, "the S3 event")
    # A later object, found by a later listing: the keys the rules refuse were listed
    # before it, so had they been let through they would be recorded by the time it is.
    s3.put_object(Bucket=run.bucket, Key="in/later.txt", Body=b"later")
    wait_for(lambda: "in/later.txt" in keys(), 30, "the later S3 event")
    assert sorted(keys()) == ["in/later.txt", "in/photo+1.txt"]
    event = recorded(path)[0]
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventVersion"] == "2.1"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == run.bucket
    assert record["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{run.bucket}"
    assert record["s3"]["object"]["key"] == "in/photo+1.txt"  # URL-encoded, as AWS sends it
    assert record["s3"]["object"]["size"] == 5


def test_s3_event_of_a_bucket_mapped_to_a_directory_delivers_the_files_its_rules_match(
    run: Run,
) -> None:
    drops = run.dir / "drops"
    (drops / "notes.txt").write_text("skipped: the suffix rule is .jpg")
    (drops / "cat.jpg").write_bytes(b"jpeg!")
    path = run.dir / "directory.jsonl"

    def keys() -> list[str]:
        return [r["s3"]["object"]["key"] for e in recorded(path) for r in e["Records"]]

    wait_for(lambda: keys() != [], 30, "the directory's S3 event")
    # A later file: the one the rule refuses was seen before it.
    (drops / "later.jpg").write_bytes(b"later")
    wait_for(lambda: "later.jpg" in keys(), 30, "the later file's event")
    assert sorted(keys()) == ["cat.jpg", "later.jpg"]
    record = next(
        r for e in recorded(path) for r in e["Records"] if r["s3"]["object"]["key"] == "cat.jpg"
    )
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == "drops"
    assert record["s3"]["object"]["size"] == 5


def test_schedule_and_schedule_v2_deliver_scheduled_events_or_their_input(run: Run) -> None:
    path = run.dir / "schedule.jsonl"

    def by_kind() -> dict[str, list[dict[str, Any]]]:
        kinds: dict[str, list[dict[str, Any]]] = {}
        for event in recorded(path):
            kinds.setdefault(str(event.get("source", "input")), []).append(event)
        return kinds

    wait_for(lambda: len(by_kind()) == 3, 30, "the three schedules to fire")
    kinds = by_kind()
    assert set(kinds) == {"aws.events", "aws.scheduler", "input"}
    # Input set: the function gets it instead of the Scheduled Event.
    assert all(e == {"job": "nightly", "size": 3} for e in kinds["input"])
    for source, arn in (
        ("aws.events", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/tick-rule"),
        ("aws.scheduler", f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/tick-v2"),
    ):
        event = kinds[source][0]
        assert event["detail-type"] == "Scheduled Event"
        assert event["version"] == "0" and event["detail"] == {}
        assert event["region"] == REGION and event["account"] == ACCOUNT
        assert event["resources"] == [arn]
        assert event["time"].endswith("Z") and event["id"]


def test_event_bridge_rule_on_a_custom_bus_delivers_only_the_matching_event(run: Run) -> None:
    events = boto3.client(
        "events",
        endpoint_url=f"http://127.0.0.1:{run.control}",
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    order = {"Source": "com.shop", "DetailType": "Order Placed"}
    resp = events.put_events(
        Entries=[
            {**order, "Detail": json.dumps({"id": 1, "amount": 50}), "EventBusName": "orders"},
            {**order, "Detail": json.dumps({"id": 2, "amount": 250}), "EventBusName": "orders"},
            # Matches the pattern, but on the default bus, where the rule is not.
            {**order, "Detail": json.dumps({"id": 3, "amount": 500})},
            # The CloudWatchEvent rule (default bus), with its InputPath.
            {"Source": "com.audit", "DetailType": "Login", "Detail": json.dumps({"who": "ann"})},
        ]
    )
    assert resp["FailedEntryCount"] == 0
    path = run.dir / "bus.jsonl"
    wait_for(lambda: len(recorded(path)) >= 2, 30, "the bus events")
    # One more matching event, put after those were answered: a wrongly matched one of
    # the first call would be recorded by the time it is.
    detail = json.dumps({"id": 4, "amount": 101})
    resp = events.put_events(Entries=[{**order, "Detail": detail, "EventBusName": "orders"}])
    assert resp["FailedEntryCount"] == 0
    wait_for(lambda: len(recorded(path)) >= 3, 30, "the last bus event")
    got = recorded(path)
    audit = [e for e in got if "source" not in e]
    shop = [e for e in got if "source" in e]
    assert audit == [{"who": "ann"}]  # InputPath $.detail
    assert sorted(e["detail"]["id"] for e in shop) == [2, 4]
    event = next(e for e in shop if e["detail"]["id"] == 2)
    assert event["source"] == "com.shop" and event["detail-type"] == "Order Placed"
    assert event["detail"] == {"id": 2, "amount": 250}
    assert event["version"] == "0" and event["region"] == REGION
    assert event["account"] == ACCOUNT and event["resources"] == []
    assert {"id", "time"} <= set(event)


def test_mq_event_delivers_rmq_batches_of_batch_size_with_the_filter_applied(
    run: Run, rabbitmq_url: str
) -> None:
    bodies = [{"kind": "other", "n": 0}] + [{"kind": "order", "n": n} for n in (1, 2, 3)]
    declare_and_publish(rabbitmq_url, run.queue, [json.dumps(b).encode() for b in bodies])
    path = run.dir / "mq.jsonl"

    def messages() -> list[dict[str, Any]]:
        return [m for e in recorded(path) for ms in e["rmqMessagesByQueue"].values() for m in ms]

    wait_for(lambda: len(messages()) >= 3, 30, "the three order messages")
    events = recorded(path)
    for event in events:
        assert event["eventSource"] == "aws:rmq"
        # GetAtt Broker.Arn: the broker's ARN by its BrokerName.
        assert event["eventSourceArn"].startswith(f"arn:aws:mq:{REGION}:{ACCOUNT}:broker:shop:b-")
        assert list(event["rmqMessagesByQueue"]) == [f"{run.queue}::/"]
    # BatchSize 2 with a 1 s window: never the three together.
    assert all(len(ms) <= 2 for e in events for ms in e["rmqMessagesByQueue"].values())
    data = [json.loads(base64.b64decode(m["data"])) for m in messages()]
    assert sorted(d["n"] for d in data) == [1, 2, 3]  # the filter dropped kind=other
    first = messages()[0]
    assert first["redelivered"] is False
    assert first["basicProperties"]["contentType"] == "application/json"


SERVERLESS = """\
service: sources
frameworkVersion: '3'
provider:
  name: aws
  runtime: python3.11
  region: eu-west-3
  environment:
    RECORD_DIR: ${env:RECORD_DIR}
functions:
  thumbnails:
    handler: app.handler
    environment:
      RECORD_FILE: ${self:provider.environment.RECORD_DIR}/s3.jsonl
    events:
      - s3:
          bucket: ${env:BUCKET}
          event: s3:ObjectCreated:*
          existing: true
          rules:
            - prefix: in/
  ticker:
    handler: app.handler
    environment:
      RECORD_FILE: ${self:provider.environment.RECORD_DIR}/schedule.jsonl
    events:
      - schedule:
          rate: rate(1 second)
          input: {job: sls}
  orders:
    handler: app.handler
    environment:
      RECORD_FILE: ${self:provider.environment.RECORD_DIR}/bus.jsonl
    events:
      - eventBridge:
          eventBus: orders
          pattern:
            source: [com.shop]
  consumer:
    handler: app.handler
    environment:
      RECORD_FILE: ${self:provider.environment.RECORD_DIR}/mq.jsonl
    events:
      - rabbitmq:
          arn: arn:aws:mq:eu-west-3:123456789012:broker:shop:b-0a1b2c3d-0000-1111-2222-333344445555
          queue: ${env:QUEUE}
          batchSize: 5
"""


def test_run_serverless_delivers_s3_schedule_event_bridge_and_rabbitmq_events(
    tmp_path: Path, moto_server: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serverless.yml's s3, schedule, eventBridge and rabbitmq events, one each, through
    `triggerd run --serverless`."""
    shutil.copy(FUNCTIONS / "recorder" / "app.py", tmp_path / "app.py")
    (tmp_path / "serverless.yml").write_text(SERVERLESS)
    suffix = uuid.uuid4().hex[:10]
    bucket, queue = f"sls-src-{suffix}", f"sls-src-{suffix}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    declare_and_publish(rabbitmq_url, queue, [])
    control = free_port()
    broker = "arn:aws:mq:eu-west-3:123456789012:broker:shop:b-0a1b2c3d-0000-1111-2222-333344445555"
    overrides = daemon_overrides(tmp_path, free_port(), control) + (
        f"endpoint_url: {moto_server}\nregion: us-east-1\n"
        f'resources:\n  "{broker}":\n    url: {rabbitmq_url}\n'
        "triggers:\n  thumbnails-s3-0:\n"
        "    source: {poll_interval_s: 0.2, starting_position: TRIM_HORIZON}\n"
    )
    for name, value in (
        ("RECORD_DIR", str(tmp_path)),
        ("BUCKET", bucket),
        ("QUEUE", queue),
        ("TRIGGERD_TEST_SECOND_RATES", "1"),
    ):
        monkeypatch.setenv(name, value)
    proc = start_with_overrides(tmp_path, overrides, "serverless", "serverless.yml", "--no-watch")
    try:
        s3.put_object(Bucket=bucket, Key="out/skipped.txt", Body=b"x")
        s3.put_object(Bucket=bucket, Key="in/a.txt", Body=b"abc")
        declare_and_publish(rabbitmq_url, queue, [b'{"n": 1}'])
        events = boto3.client(
            "events", endpoint_url=f"http://127.0.0.1:{control}", region_name="eu-west-3"
        )
        resp = events.put_events(
            Entries=[
                {
                    "Source": "com.other",
                    "DetailType": "X",
                    "Detail": "{}",
                    "EventBusName": "orders",
                },
                {"Source": "com.shop", "DetailType": "Y", "Detail": "{}", "EventBusName": "orders"},
            ]
        )
        assert resp["FailedEntryCount"] == 0
        files = ("s3", "schedule", "bus", "mq")
        wait_for(lambda: all(recorded(tmp_path / f"{f}.jsonl") for f in files), 30, "every event")
        (s3_event,) = recorded(tmp_path / "s3.jsonl")
        (record,) = s3_event["Records"]
        assert record["eventSource"] == "aws:s3" and record["eventName"].startswith(
            "ObjectCreated:"
        )
        assert (record["s3"]["bucket"]["name"], record["s3"]["object"]["key"]) == (
            bucket,
            "in/a.txt",
        )
        assert recorded(tmp_path / "schedule.jsonl")[0] == {"job": "sls"}
        (bus_event,) = recorded(tmp_path / "bus.jsonl")
        assert (bus_event["source"], bus_event["detail-type"]) == ("com.shop", "Y")
        (mq_event,) = recorded(tmp_path / "mq.jsonl")
        assert (mq_event["eventSource"], mq_event["eventSourceArn"]) == ("aws:rmq", broker)
        (messages,) = mq_event["rmqMessagesByQueue"].values()
        assert [json.loads(base64.b64decode(m["data"])) for m in messages] == [{"n": 1}]
    finally:
        stop(proc)
        delete_queue(rabbitmq_url, queue)
    assert proc.returncode == 0


QUEUES = """\
service: queues
frameworkVersion: '3'
provider:
  name: aws
  runtime: python3.11
  region: eu-west-3
functions:
  worker:
    handler: app.handler
    environment:
      RECORD_FILE: ${env:RECORD_DIR}/sqs.jsonl
    events:
      - sqs:
          arn: arn:aws:sqs:us-east-1:123456789012:${env:QUEUE}
          batchSize: 2
          maximumBatchingWindow: 1
  notified:
    handler: app.handler
    environment:
      RECORD_FILE: ${env:RECORD_DIR}/sns.jsonl
    events:
      - sns:
          topicName: notices
          filterPolicy: {kind: [order]}
"""


def test_run_serverless_delivers_sqs_and_sns_events(
    tmp_path: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serverless.yml's sqs event (a moto_server queue at the overrides' endpoint_url, its
    batchSize) and sns event (a topic on the control listener, its filterPolicy) through
    `triggerd run --serverless`."""
    shutil.copy(FUNCTIONS / "recorder" / "app.py", tmp_path / "app.py")
    (tmp_path / "serverless.yml").write_text(QUEUES)
    queue = f"sls-q-{uuid.uuid4().hex[:10]}"
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    control = free_port()
    overrides = daemon_overrides(tmp_path, free_port(), control) + (
        f"endpoint_url: {moto_server}\nregion: us-east-1\n"
    )
    monkeypatch.setenv("RECORD_DIR", str(tmp_path))
    monkeypatch.setenv("QUEUE", queue)
    proc = start_with_overrides(tmp_path, overrides, "serverless", "serverless.yml", "--no-watch")
    try:
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "MessageBody": json.dumps({"n": n})} for n in range(3)],
        )
        sns = boto3.client("sns", endpoint_url=f"http://127.0.0.1:{control}", region_name=REGION)
        topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:notices"
        for kind in ("other", "order"):  # the filter policy lets the second one through
            sns.publish(
                TopicArn=topic,
                Message=json.dumps({"kind": kind}),
                MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}},
            )

        def bodies() -> list[Any]:
            events = recorded(tmp_path / "sqs.jsonl")
            return [json.loads(r["body"]) for e in events for r in e["Records"]]

        wait_for(lambda: len(bodies()) == 3, 30, "the three messages")
        wait_for(lambda: recorded(tmp_path / "sns.jsonl") != [], 30, "the SNS event")
        batches = recorded(tmp_path / "sqs.jsonl")
        assert all(len(e["Records"]) <= 2 for e in batches)  # batchSize 2
        assert sorted(b["n"] for b in bodies()) == [0, 1, 2]
        record = batches[0]["Records"][0]
        assert (record["eventSource"], record["eventSourceARN"]) == (
            "aws:sqs",
            f"arn:aws:sqs:us-east-1:{ACCOUNT}:{queue}",
        )
        (sns_event,) = recorded(tmp_path / "sns.jsonl")
        (note,) = sns_event["Records"]
        assert note["EventSource"] == "aws:sns" and note["Sns"]["TopicArn"] == topic
        assert json.loads(note["Sns"]["Message"]) == {"kind": "order"}
    finally:
        stop(proc)
    assert proc.returncode == 0
