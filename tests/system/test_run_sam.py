"""`triggerd run --sam` as a subprocess: a SAM template's Api (payload 1.0) and HttpApi
(payload 2.0) events answered by its Python handlers (one of them InlineCode) over real HTTP,
its SQS event read from moto_server (the overrides file's endpoint_url), its SNS event a
topic on the control listener that boto3 publishes to (signed with the overrides file's
key), with the ports and the state store given by the overrides file; SIGHUP translates the
template and the overrides file again. A second template's SQS event with
FunctionResponseTypes: [ReportBatchItemFailures] redelivers only the message its handler
names in batchItemFailures."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import free_port, wait_for
from tests.system.sam_support import daemon_overrides, get, start_with_overrides, stop

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_env")]
pytest.importorskip("cfnlint")

HANDLER = Path(__file__).resolve().parents[1] / "data" / "sam" / "src" / "api"
RECORDER = Path(__file__).resolve().parents[1] / "integration" / "functions" / "sqs_recorder"
REGION = "eu-west-3"
KEY_ID = "SAMTESTKEY"
SECRET = "sam-test-secret-0123456789"

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting:
    Type: String
    Default: hello
  RecordDir:
    Type: String
  QueueName:
    Type: String
Globals:
  Function:
    Runtime: python3.11
    Timeout: 10
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: dev
  Inline:
    Type: AWS::Serverless::Function
    Properties:
      Handler: index.handler
      InlineCode: |
        import json
        def handler(event, context):
            return {"statusCode": 200, "body": json.dumps({"inline": event["rawPath"]})}
      Events:
        Get:
          Type: HttpApi
          Properties:
            Path: /inline
            Method: GET
  Notices:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: notices
  Notified:
    Type: AWS::Serverless::Function
    Properties:
      Handler: index.handler
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/sns.jsonl"
      InlineCode: |
        import json, os
        def handler(event, context):
            with open(os.environ["RECORD_FILE"], "a") as f:
                f.write(json.dumps(event) + "\\n")
      Events:
        Notice:
          Type: SNS
          Properties:
            Topic: !Ref Notices
            FilterPolicy: {kind: [order]}
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Ref QueueName
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: worker/
      Handler: app.handler
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/batches.jsonl"
      Events:
        Queue:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 5
  Hello:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: api/
      Handler: app.handler
      Environment:
        Variables:
          GREETING: !Sub "${Greeting} from ${AWS::Region}"
      Events:
        Rest:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /orders/{id}
            Method: GET
        Http:
          Type: HttpApi
          Properties:
            Path: /items
            Method: POST
"""


@pytest.fixture
def queue_url(moto_server: str) -> str:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
    return str(sqs.create_queue(QueueName=f"sam-{uuid.uuid4().hex[:12]}")["QueueUrl"])


@pytest.fixture
def daemon(
    tmp_path: Path, moto_server: str, queue_url: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    shutil.copytree(HANDLER, tmp_path / "api")
    shutil.copytree(RECORDER, tmp_path / "worker")
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    port, control = free_port(), free_port()
    access_key = (
        f"  access_keys:\n    - {{access_key_id: {KEY_ID}, secret_access_key: {SECRET}, "
        'actions: ["sns:Publish"]}\n'
    )
    overrides = daemon_overrides(tmp_path, port, control, access_key) + (
        f"endpoint_url: {moto_server}\n"
        f'parameters:\n  Greeting: "hi"\n  RecordDir: "{tmp_path}"\n'
        f"  QueueName: {queue_url.rsplit('/', 1)[1]}\n"
    )
    parameters = f"AWS::Region={REGION}"
    proc = start_with_overrides(
        tmp_path, overrides, "sam", "template.yaml", "--parameter-overrides", parameters
    )
    try:
        yield proc, port, control, tmp_path
    finally:
        stop(proc)


def test_run_sam_answers_api_http_api_sqs_and_sns_events(
    daemon: tuple[subprocess.Popen[bytes], int, int, Path], moto_server: str, queue_url: str
) -> None:
    proc, port, control, tmp_path = daemon
    status, body = get(f"http://127.0.0.1:{port}/orders/42")
    assert status == 200
    assert body == {"path": "/orders/42", "stage": "dev", "greeting": "hi from eu-west-3"}
    status, body = get(f"http://127.0.0.1:{port}/items", data=b"{}")
    assert status == 200
    assert body == {"path": "/items", "stage": "$default", "greeting": "hi from eu-west-3"}
    status, body = get(f"http://127.0.0.1:{port}/inline")
    assert (status, body) == (200, {"inline": "/inline"})  # InlineCode, written beside it
    assert (tmp_path / ".triggerd-inline" / "Inline" / "index.py").is_file()
    import boto3

    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"id": "m1"}))
    batches = tmp_path / "batches.jsonl"
    wait_for(lambda: batches.exists() and batches.read_text().strip() != "", 30, "the batch")
    records = [
        r for line in batches.read_text().splitlines() for r in json.loads(line)["event"]["Records"]
    ]
    assert [json.loads(r["body"]) for r in records] == [{"id": "m1"}]
    assert (
        records[0]["eventSourceARN"]
        == f"arn:aws:sqs:{REGION}:123456789012:" + (queue_url.rsplit("/", 1)[1])
    )
    sns = boto3.client(
        "sns",
        endpoint_url=f"http://127.0.0.1:{control}",
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    topic = f"arn:aws:sns:{REGION}:123456789012:notices"
    for kind in ("other", "order"):  # the filter policy lets the second one through
        sns.publish(
            TopicArn=topic,
            Message=json.dumps({"kind": kind}),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}},
        )
    notices = tmp_path / "sns.jsonl"
    wait_for(lambda: notices.exists() and notices.read_text().strip() != "", 30, "the SNS event")
    (event,) = [json.loads(line) for line in notices.read_text().splitlines()]
    (record,) = event["Records"]
    assert record["EventSource"] == "aws:sns" and record["Sns"]["TopicArn"] == topic
    assert json.loads(record["Sns"]["Message"]) == {"kind": "order"}
    # SIGHUP: the template and the overrides file are translated again.
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(overrides.read_text().replace('Greeting: "hi"', 'Greeting: "hey"'))
    proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: get(f"http://127.0.0.1:{port}/orders/1")[1]["greeting"] == "hey from eu-west-3",
        30,
        "the reloaded translation",
    )
    summary = (tmp_path / "stdout.log").read_text()
    assert "trigger Hello-Rest: webhook -> Hello" in summary
    assert "trigger Hello-Http: webhook -> Hello" in summary
    assert "trigger Worker-Queue: sqs -> Worker" in summary
    assert "watch.started" in (tmp_path / "stderr.log").read_text()  # hot reload on by default
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


PARTIAL = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  RecordDir:
    Type: String
  QueueName:
    Type: String
Resources:
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Ref QueueName
  Partial:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: index.handler
      Timeout: 10
      Environment:
        Variables:
          RECORD_FILE: !Sub "${RecordDir}/partial.jsonl"
      InlineCode: |
        import json, os
        def handler(event, context):
            bodies = [json.loads(r["body"]) for r in event["Records"]]
            with open(os.environ["RECORD_FILE"], "a") as f:
                f.write(json.dumps(bodies) + "\\n")
            failed = [r for r, b in zip(event["Records"], bodies) if b.get("fail")]
            return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in failed]}
      Events:
        Queue:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 10
            MaximumBatchingWindowInSeconds: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
"""


def test_run_sam_report_batch_item_failures_redelivers_only_the_failed_message(
    tmp_path: Path, moto_server: str, queue_url: str
) -> None:
    """FunctionResponseTypes: [ReportBatchItemFailures] at work: the handler returns the
    failed message's id in batchItemFailures and does not raise; only that message comes
    back (without the translation the whole batch would count as a success and be deleted)."""
    (tmp_path / "template.yaml").write_text(PARTIAL)
    overrides = daemon_overrides(tmp_path, free_port()) + (
        f"endpoint_url: {moto_server}\n"
        f'parameters:\n  RecordDir: "{tmp_path}"\n  QueueName: {queue_url.rsplit("/", 1)[1]}\n'
        # A failed message is visible again after 1 s, not the queue's 30 s.
        "triggers:\n  Partial-Queue:\n    source: {nack_visibility_timeout_s: 1}\n"
    )
    parameters = f"AWS::Region={REGION}"
    proc = start_with_overrides(
        tmp_path,
        overrides,
        "sam",
        "template.yaml",
        "--parameter-overrides",
        parameters,
        "--no-watch",
    )
    import boto3

    record = tmp_path / "partial.jsonl"

    def deliveries(key: str) -> int:
        lines = record.read_text().splitlines() if record.exists() else []
        return sum(b["id"] == key for line in lines for b in json.loads(line))

    try:
        sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": "ok", "MessageBody": json.dumps({"id": "ok"})},
                {"Id": "bad", "MessageBody": json.dumps({"id": "bad", "fail": True})},
            ],
        )
        wait_for(lambda: deliveries("bad") >= 2, 30, "the failed message delivered again")
        assert deliveries("ok") == 1
    finally:
        stop(proc)
