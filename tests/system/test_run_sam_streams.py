"""`triggerd run --sam` and `--serverless` as subprocesses on the stream and Kafka event types:
one SAM template whose Kinesis event reads a moto_server stream, whose DynamoDB event reads a
PostgreSQL table (the overrides map the table's stream to the session's logical-decoding
cluster), and whose SelfManagedKafka and MSK events read the session's Kafka-compatible broker
(the overrides map the template's bootstrap servers, and the cluster, to it); and a
serverless.yml whose `stream` events read a Kinesis stream and a table mapped to PostgreSQL,
and whose `kafka` event reads the broker the overrides map its bootstrap servers to.
Each handler records the events it got: they have the shape AWS sends for that type, and a
translated property (BatchSize, FilterCriteria, ConsumerGroupId, StreamViewType, batchSize,
filterPatterns) is seen at work."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.harness import TansuBroker
from tests.integration.kafka_support import committed, create_topic, produce
from tests.integration.kinesis_support import kinesis_client, make_stream, put_json
from tests.system.conftest import FUNCTIONS, free_port, wait_for
from tests.system.sam_support import daemon_overrides, recorded, start_with_overrides, stop

pytestmark = [pytest.mark.system, pytest.mark.integration, pytest.mark.timeout(120)]
pytest.importorskip("cfnlint")

REGION = "us-east-1"
#: Dummy credentials for the daemon's clients of moto_server (as the aws_env fixture's).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  RecordDir:
    Type: String
  StreamName:
    Type: String
  TableName:
    Type: String
  Topic:
    Type: String
  AuditTopic:
    Type: String
Globals:
  Function:
    Runtime: python3.11
    Handler: app.handler
    CodeUri: recorder/
    Timeout: 10
Resources:
  Clicks:
    Type: AWS::Kinesis::Stream
    Properties:
      Name: !Ref StreamName
      ShardCount: 1
  Orders:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Ref TableName
      StreamSpecification:
        StreamViewType: NEW_AND_OLD_IMAGES
  ClickFn:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/kinesis.jsonl"
      Events:
        Stream:
          Type: Kinesis
          Properties:
            Stream: !GetAtt Clicks.Arn
            StartingPosition: TRIM_HORIZON
            BatchSize: 2
            MaximumBatchingWindowInSeconds: 1
            FilterCriteria:
              Filters:
                - Pattern: '{"data": {"kind": ["click"]}}'
  OrderFn:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/dynamodb.jsonl"
      Events:
        Stream:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Orders.StreamArn
            StartingPosition: LATEST
            BatchSize: 10
            FilterCriteria:
              Filters:
                - Pattern: '{"dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}'
  KafkaFn:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/kafka.jsonl"
      Events:
        Topic:
          Type: SelfManagedKafka
          Properties:
            KafkaBootstrapServers: ["kafka.internal:9092"]
            Topics: [!Ref Topic]
            StartingPosition: TRIM_HORIZON
            BatchSize: 2
            ConsumerGroupId: !Sub "${Topic}-group"
  Audit:
    Type: AWS::MSK::Cluster
  AuditFn:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/msk.jsonl"
      Events:
        Audit:
          Type: MSK
          Properties:
            Stream: !GetAtt Audit.Arn
            Topics: [!Ref AuditTopic]
            StartingPosition: TRIM_HORIZON
            FilterCriteria:
              Filters:
                - Pattern: '{"value": {"kind": ["audit"]}}'
"""


@dataclass
class SamRun:
    """The running daemon of TEMPLATE and the resources its events read."""

    dir: Path
    stream: str
    table: str
    topic: str
    msk_topic: str
    bootstrap: str


async def _kinesis_stream(endpoint: str) -> str:
    async with kinesis_client(endpoint) as client:
        return await make_stream(client)


@pytest.fixture(scope="module")
def sam_run(
    tmp_path_factory: pytest.TempPathFactory,
    moto_server: str,
    kafka_broker: TansuBroker,
    pg_cluster: Any,
) -> Iterator[SamRun]:
    tmp = tmp_path_factory.mktemp("sam-streams")
    suffix = uuid.uuid4().hex[:8]
    stream = asyncio.run(_kinesis_stream(moto_server))
    table, slot = f"orders_{suffix}", f"triggerd_e2e_{suffix}"
    pg_cluster.psql(
        f"CREATE TABLE {table} (id int PRIMARY KEY, status text);"
        f"ALTER TABLE {table} REPLICA IDENTITY FULL"  # for NEW_AND_OLD_IMAGES
    )
    topic = asyncio.run(create_topic(kafka_broker.bootstrap, prefix="sam"))
    msk_topic = asyncio.run(create_topic(kafka_broker.bootstrap, prefix="msk"))
    shutil.copytree(FUNCTIONS / "recorder", tmp / "recorder")
    (tmp / "template.yaml").write_text(TEMPLATE)
    overrides = daemon_overrides(tmp, free_port()) + (
        f"endpoint_url: {moto_server}\nregion: {REGION}\n"
        f'parameters:\n  RecordDir: "{tmp}"\n  StreamName: {stream}\n'
        f"  TableName: {table}\n  Topic: {topic}\n  AuditTopic: {msk_topic}\n"
        "resources:\n"
        f"  Clicks: {{poll_interval_s: 0.1}}\n"
        f"  Orders: {{type: postgres, dsn: '{pg_cluster.dsn}', slot: {slot}, "
        f"publication: {slot}, poll_interval_s: 0.05, max_poll_interval_s: 0.2}}\n"
        f'  "kafka.internal:9092": {{bootstrap_servers: ["{kafka_broker.bootstrap}"], '
        "session_timeout_ms: 1000, heartbeat_interval_ms: 300}\n"
        f'  Audit: {{bootstrap_servers: ["{kafka_broker.bootstrap}"], '
        "session_timeout_ms: 1000, heartbeat_interval_ms: 300}\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_ENV.items():
            mp.setenv(key, value)
        proc = start_with_overrides(tmp, overrides, "sam", "template.yaml", "--no-watch")
    try:
        yield SamRun(tmp, stream, table, topic, msk_topic, kafka_broker.bootstrap)
    finally:
        stop(proc)
        pg_cluster.psql(
            f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
            f"WHERE slot_name = '{slot}'; DROP PUBLICATION IF EXISTS {slot}; DROP TABLE {table}"
        )
        assert proc.returncode == 0, (tmp / "stderr.log").read_text()[-3000:]


def test_sam_kinesis_event_delivers_aws_kinesis_records_filtered_in_batches_of_batch_size(
    sam_run: SamRun, moto_server: str
) -> None:
    async def put() -> list[str]:
        async with kinesis_client(moto_server) as client:
            items = [("p", {"id": i, "kind": "view" if i == 2 else "click"}) for i in range(6)]
            return await put_json(client, sam_run.stream, items)

    sequences = asyncio.run(put())
    path = sam_run.dir / "kinesis.jsonl"
    wait_for(lambda: sum(len(e["Records"]) for e in recorded(path)) >= 5, 30, "the records")
    events = recorded(path)
    records = [r for e in events for r in e["Records"]]
    datas = [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in records]
    # FilterCriteria: the "view" record (id 2) is left out; order kept.
    assert [d["id"] for d in datas] == [0, 1, 3, 4, 5]
    # BatchSize 2: no invocation holds more than two records.
    assert max(len(e["Records"]) for e in events) <= 2 and len(events) >= 3
    first = records[0]
    assert first["eventSource"] == "aws:kinesis"
    assert first["eventName"] == "aws:kinesis:record"
    assert first["eventVersion"] == "1.0"
    assert first["awsRegion"] == REGION
    assert first["eventSourceARN"].endswith(f":stream/{sam_run.stream}")
    assert first["eventID"] == f"{first['eventID'].split(':')[0]}:{sequences[0]}"
    kinesis = first["kinesis"]
    assert kinesis["partitionKey"] == "p" and kinesis["sequenceNumber"] == sequences[0]
    assert kinesis["kinesisSchemaVersion"] == "1.0"
    assert isinstance(kinesis["approximateArrivalTimestamp"], float | int)


def test_sam_dynamodb_event_mapped_to_postgres_delivers_filtered_aws_dynamodb_records(
    sam_run: SamRun, pg_cluster: Any
) -> None:
    t = sam_run.table
    pg_cluster.psql(
        f"INSERT INTO {t} VALUES (1, 'new'), (2, 'new');"
        f"UPDATE {t} SET status = 'paid' WHERE id = 2; DELETE FROM {t} WHERE id = 1;"
        f"INSERT INTO {t} VALUES (3, 'paid')"
    )
    path = sam_run.dir / "dynamodb.jsonl"
    wait_for(lambda: sum(len(e["Records"]) for e in recorded(path)) >= 2, 30, "the records")
    records = [r for e in recorded(path) for r in e["Records"]]
    # FilterCriteria (NewImage.status "paid"): the "new" inserts and the delete are left out.
    assert [(r["eventName"], r["dynamodb"]["Keys"]) for r in records] == [
        ("MODIFY", {"id": {"N": "2"}}),
        ("INSERT", {"id": {"N": "3"}}),
    ]
    modify = records[0]
    assert modify["eventSource"] == "aws:dynamodb"
    assert modify["eventVersion"] == "1.1"
    assert modify["awsRegion"] == REGION
    assert modify["eventSourceARN"].startswith(f"arn:aws:dynamodb:{REGION}:")
    # The template table's StreamViewType (NEW_AND_OLD_IMAGES): both images.
    ddb = modify["dynamodb"]
    assert ddb["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert ddb["OldImage"] == {"id": {"N": "2"}, "status": {"S": "new"}}
    assert ddb["NewImage"] == {"id": {"N": "2"}, "status": {"S": "paid"}}
    assert {"SequenceNumber", "SizeBytes", "ApproximateCreationDateTime"} <= set(ddb)
    assert modify["eventID"] != records[1]["eventID"]


def test_sam_self_managed_kafka_event_delivers_the_records_in_its_consumer_group(
    sam_run: SamRun,
) -> None:
    values = [b"k0", b"k1", b"k2"]
    asyncio.run(
        produce(sam_run.bootstrap, sam_run.topic, values, key=b"key", headers=[("h", b"v")])
    )
    path = sam_run.dir / "kafka.jsonl"

    def records() -> list[dict[str, Any]]:
        return [r for e in recorded(path) for rs in e["records"].values() for r in rs]

    wait_for(lambda: len(records()) >= 3, 30, "the records")
    events = recorded(path)
    assert [base64.b64decode(r["value"]) for r in records()] == values
    # BatchSize 2: no invocation holds more than two records.
    assert all(sum(len(rs) for rs in e["records"].values()) <= 2 for e in events)
    event = events[0]
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == sam_run.bootstrap
    assert list(event["records"]) == [f"{sam_run.topic}-0"]
    first = records()[0]
    assert (first["topic"], first["partition"], first["offset"]) == (sam_run.topic, 0, 0)
    assert base64.b64decode(first["key"]) == b"key"
    assert first["headers"] == [{"h": [118]}]
    assert first["timestampType"] == "CREATE_TIME"
    # ConsumerGroupId: the offsets are committed in the template's group.
    group = f"{sam_run.topic}-group"
    wait_for(
        lambda: asyncio.run(committed(sam_run.bootstrap, group, sam_run.topic, 1)) == [3],
        30,
        "the offsets committed in the template's group",
    )


def test_sam_msk_event_delivers_filtered_aws_kafka_events_with_the_cluster_arn(
    sam_run: SamRun,
) -> None:
    values = [json.dumps({"kind": k, "n": i}).encode() for i, k in enumerate(["audit", "x"] * 2)]
    asyncio.run(produce(sam_run.bootstrap, sam_run.msk_topic, values))
    path = sam_run.dir / "msk.jsonl"

    def records() -> list[dict[str, Any]]:
        return [r for e in recorded(path) for rs in e["records"].values() for r in rs]

    wait_for(lambda: len(records()) >= 2, 30, "the records")
    # FilterCriteria on the JSON value: the "x" records are left out.
    assert [json.loads(base64.b64decode(r["value"]))["n"] for r in records()] == [0, 2]
    assert [r["offset"] for r in records()] == [0, 2]
    event = recorded(path)[0]
    assert event["eventSource"] == "aws:kafka"
    assert event["eventSourceArn"] == "arn:aws:kafka:us-east-1:123456789012:cluster/Audit"
    assert event["bootstrapServers"] == sam_run.bootstrap
    assert list(event["records"]) == [f"{sam_run.msk_topic}-0"]


SERVERLESS = """\
service: clicks
frameworkVersion: "3"
provider:
  name: aws
  runtime: python3.11
  region: {region}
functions:
  clicks:
    handler: app.handler
    environment:
      RECORD_FILE: ${{env:RECORD_DIR}}/serverless.jsonl
    events:
      - stream:
          type: kinesis
          arn: arn:aws:kinesis:{region}:123456789012:stream/${{opt:stream}}
          startingPosition: TRIM_HORIZON
          batchSize: 2
          filterPatterns:
            - data:
                kind: [click]
  orders:
    handler: app.handler
    environment:
      RECORD_FILE: ${{env:RECORD_DIR}}/serverless-orders.jsonl
    events:
      - stream:
          type: dynamodb
          arn: !GetAtt Orders.StreamArn
          batchSize: 10
  audit:
    handler: app.handler
    environment:
      RECORD_FILE: ${{env:RECORD_DIR}}/serverless-kafka.jsonl
    events:
      - kafka:
          topic: ${{opt:topic}}
          bootstrapServers: [kafka.internal:9092]
          startingPosition: TRIM_HORIZON
          batchSize: 2
          consumerGroupId: ${{opt:topic}}-sls
resources:
  Resources:
    Orders:
      Type: AWS::DynamoDB::Table
      Properties:
        TableName: ${{opt:table}}
        StreamSpecification:
          StreamViewType: KEYS_ONLY
"""


def test_run_serverless_kinesis_dynamodb_and_kafka_events_deliver_aws_records(
    tmp_path: Path,
    moto_server: str,
    pg_cluster: Any,
    kafka_broker: TansuBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = asyncio.run(_kinesis_stream(moto_server))
    topic = asyncio.run(create_topic(kafka_broker.bootstrap, prefix="sls"))
    suffix = uuid.uuid4().hex[:8]
    table, slot = f"sls_orders_{suffix}", f"triggerd_sls_{suffix}"
    pg_cluster.psql(f"CREATE TABLE {table} (id int PRIMARY KEY, status text)")
    shutil.copytree(FUNCTIONS / "recorder", tmp_path, dirs_exist_ok=True)
    (tmp_path / "serverless.yml").write_text(SERVERLESS.format(region=REGION))
    overrides = daemon_overrides(tmp_path, free_port()) + (
        f"endpoint_url: {moto_server}\nregion: {REGION}\n"
        "resources:\n"
        f"  {stream}: {{poll_interval_s: 0.1}}\n"  # tunes the stream, still read from moto
        f"  Orders: {{type: postgres, dsn: '{pg_cluster.dsn}', slot: {slot}, "
        f"publication: {slot}, poll_interval_s: 0.05, max_poll_interval_s: 0.2}}\n"
        f'  "kafka.internal:9092": {{bootstrap_servers: ["{kafka_broker.bootstrap}"], '
        "session_timeout_ms: 1000, heartbeat_interval_ms: 300}\n"
    )
    for key, value in {**AWS_ENV, "RECORD_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    proc = start_with_overrides(
        tmp_path,
        overrides,
        "serverless",
        "serverless.yml",
        "--opt",
        f"stream={stream}",
        "--opt",
        f"table={table}",
        "--opt",
        f"topic={topic}",
        "--no-watch",
    )
    try:

        async def put() -> None:
            async with kinesis_client(moto_server) as client:
                items = [("q", {"id": i, "kind": "view" if i == 1 else "click"}) for i in range(5)]
                await put_json(client, stream, items)

        asyncio.run(put())
        pg_cluster.psql(f"INSERT INTO {table} VALUES (7, 'new')")
        path = tmp_path / "serverless.jsonl"
        wait_for(lambda: sum(len(e["Records"]) for e in recorded(path)) >= 4, 30, "the records")
        events = recorded(path)
        records = [r for e in events for r in e["Records"]]
        ids = [json.loads(base64.b64decode(r["kinesis"]["data"]))["id"] for r in records]
        assert ids == [0, 2, 3, 4]  # filterPatterns: the "view" record is left out
        assert max(len(e["Records"]) for e in events) <= 2  # batchSize
        assert {r["eventSource"] for r in records} == {"aws:kinesis"}
        assert records[0]["eventSourceARN"].endswith(f":stream/{stream}")
        assert records[0]["kinesis"]["partitionKey"] == "q"
        # The table's stream, read from PostgreSQL: that table's row, KEYS_ONLY as declared.
        rows = tmp_path / "serverless-orders.jsonl"
        wait_for(lambda: bool(recorded(rows)), 30, "the row change")
        ((change,),) = [e["Records"] for e in recorded(rows)]
        assert (change["eventSource"], change["eventName"]) == ("aws:dynamodb", "INSERT")
        assert f".{table}/stream/{slot}" in change["eventSourceARN"]
        assert change["dynamodb"]["Keys"] == {"id": {"N": "7"}}
        assert change["dynamodb"]["StreamViewType"] == "KEYS_ONLY"
        assert "NewImage" not in change["dynamodb"]
        summary = (tmp_path / "stdout.log").read_text()
        assert "trigger clicks-stream-0: kinesis -> clicks" in summary
        assert "trigger orders-stream-0: postgres -> orders" in summary
        # The kafka event: the overrides' broker, its batchSize and consumerGroupId.
        values = [b"a0", b"a1", b"a2"]
        asyncio.run(produce(kafka_broker.bootstrap, topic, values))
        kafka = tmp_path / "serverless-kafka.jsonl"

        def kafka_records() -> list[dict[str, Any]]:
            return [r for e in recorded(kafka) for rs in e["records"].values() for r in rs]

        wait_for(lambda: len(kafka_records()) >= 3, 30, "the Kafka records")
        assert [base64.b64decode(r["value"]) for r in kafka_records()] == values
        assert all(sum(len(rs) for rs in e["records"].values()) <= 2 for e in recorded(kafka))
        assert recorded(kafka)[0]["eventSource"] == "SelfManagedKafka"
        wait_for(
            lambda: asyncio.run(committed(kafka_broker.bootstrap, f"{topic}-sls", topic, 1)) == [3],
            30,
            "the offsets committed in the file's group",
        )
    finally:
        stop(proc)
        pg_cluster.psql(
            f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
            f"WHERE slot_name = '{slot}'; DROP PUBLICATION IF EXISTS {slot}; DROP TABLE {table}"
        )
    assert proc.returncode == 0, (tmp_path / "stderr.log").read_text()[-3000:]
