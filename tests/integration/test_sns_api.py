"""The SNS Query API served by triggerd, called with real boto3 clients (and the AWS CLI), signed
with SigV4: topics, subscriptions, Publish / PublishBatch fanned out to local functions as
`aws:sns` events, filter policies of both scopes, FIFO order and deduplication, and AWS's XML
errors as botocore parses them. One daemon for the module."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import pytest_asyncio
from botocore.config import Config
from botocore.exceptions import ClientError

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

FUNCTIONS = Path(__file__).parent / "functions"
KEY_ID, SECRET = "SNSADMIN", "s3cret-s3cret-s3cret"
PUB_ID, PUB_SECRET = "SNSPUBLISHER", "publisher-secret-1234"
ACCOUNT = "123456789012"
ARN = f"arn:aws:sns:us-east-1:{ACCOUNT}:"
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


@dataclass
class Running:
    daemon: Daemon
    url: str
    tmp: Path
    http: aiohttp.ClientSession
    moto: str
    queues: dict[str, str]

    def records(self) -> list[dict[str, Any]]:
        path = self.tmp / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def client(self, key: str = KEY_ID, secret: str = SECRET) -> Any:
        return boto3.client(
            "sns",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=NO_RETRIES,
        )


def sqs_client(moto: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=moto,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _fn(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "handler": "app.handler",
        "code": str(FUNCTIONS / "sns_recorder"),
        "timeout_s": 5,
        "environment": {"RECORD_FILE": str(tmp / "calls.jsonl")},
        **extra,
    }


def config(tmp: Path, moto: str, queues: dict[str, str]) -> dict[str, Any]:
    return {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "",
            "control_listen": "127.0.0.1:0",
            "work_dir": str(tmp / "run"),
            "shutdown_timeout_s": 5,
            "access_keys": [
                {"access_key_id": KEY_ID, "secret_access_key": SECRET, "actions": ["sns:*"]},
                {
                    "access_key_id": PUB_ID,
                    "secret_access_key": PUB_SECRET,
                    "actions": ["sns:Publish"],
                    "resources": [ARN + "orders"],
                },
            ],
        },
        "functions": {
            "alpha": _fn(tmp),
            "beta": _fn(tmp),
            # Four at a time: only the relay keeps a group in order.
            "ordered": _fn(tmp, reserved_concurrency=4),
            "fragile": _fn(tmp),
        },
        "async_invocation": {
            "fragile": {
                "maximum_retry_attempts": 0,
                "on_failure": {"type": "file", "path": str(tmp / "sns-dlq.jsonl")},
            }
        },
        "sns": {
            "topics": [
                {
                    "name": "orders",
                    "subscriptions": [
                        {"function": "alpha"},
                        {"protocol": "sqs", "queue": queues["std"]},
                        {
                            "function": "beta",
                            "filter_policy": {
                                "kind": ["big", {"prefix": "huge-"}],
                                "price": [{"numeric": [">", 10, "<=", 100]}],
                            },
                        },
                    ],
                },
                {"name": "fragile", "subscriptions": [{"function": "fragile"}]},
                {
                    "name": "bodies",
                    "subscriptions": [
                        {
                            "function": "beta",
                            "filter_policy": '{"status": [{"anything-but": ["bad"]}]}',
                            "filter_policy_scope": "MessageBody",
                        }
                    ],
                },
                {
                    "name": "events.fifo",
                    "fifo": True,
                    "subscriptions": [
                        {"function": "ordered"},
                        {"protocol": "sqs", "queue": queues["fifo"], "raw_message_delivery": True},
                    ],
                },
            ],
            "sqs_endpoints": [
                {
                    "name": name,
                    "queue_url": f"{moto}/123456789012/{name}",
                    "endpoint_url": moto,
                    "aws_access_key_id": "testing",
                    "aws_secret_access_key": "testing",
                }
                for name in queues.values()
            ],
        },
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    tmp_path_factory: pytest.TempPathFactory, moto_server: str
) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("sns")
    suffix = uuid.uuid4().hex[:8]
    queues = {"std": f"sns-std-{suffix}", "fifo": f"sns-fifo-{suffix}.fifo"}
    sqs = sqs_client(moto_server)
    sqs.create_queue(QueueName=queues["std"])
    sqs.create_queue(QueueName=queues["fifo"], Attributes={"FifoQueue": "true"})
    registry = Registry.discover()
    cfg = validate_data(config(tmp, moto_server, queues), registry, base_dir=tmp)
    async with (
        Daemon(cfg, registry).running() as daemon,
        aiohttp.ClientSession() as http,
    ):
        yield Running(daemon, f"http://{daemon.control_address}", tmp, http, moto_server, queues)


async def call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def wait_for(cond: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = cond()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def of(r: Running, marker: str, function: str | None = None) -> list[dict[str, Any]]:
    return [
        rec
        for rec in r.records()
        if marker in rec["event"]["Records"][0]["Sns"]["Message"]
        and (function is None or rec["function"] == function)
    ]


async def settled(r: Running, marker: str, function: str) -> None:
    """A positive barrier: publish `marker` last (it must reach `function`), wait for it, then
    for `function`'s Event queue to be empty, so every delivery queued before the marker has
    been invoked and recorded; what has not arrived by then was never queued."""
    await wait_for(lambda: of(r, marker, function), f"the marker {marker}")
    await drained(r.daemon, function)


async def drained(daemon: Daemon, function: str) -> None:
    """Wait for `function`'s Event queue to be empty: every delivery queued so far has been
    invoked (and recorded, before its completion)."""
    state, queue = daemon.state, daemon.invoke_queues[function].name
    assert state is not None

    async def depth() -> int:
        return await state.queue_depth(queue)

    deadline = asyncio.get_running_loop().time() + 15
    while await depth():
        assert asyncio.get_running_loop().time() < deadline, f"{function}'s queue never drained"
        await asyncio.sleep(0.05)


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


# --------------------------------------------------------------------------------------------


async def test_publish_fans_out_the_aws_sns_event_to_every_subscriber(running: Running) -> None:
    sns = running.client()
    resp = await call(
        sns.publish,
        TopicArn=ARN + "orders",
        Message="m-fanout",
        Subject="Hello",
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "big"},
            "price": {"DataType": "Number", "StringValue": "42"},
            "tags": {"DataType": "String.Array", "StringValue": '["a", 1]'},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    got = await wait_for(
        lambda: len(of(running, "m-fanout")) == 2 and of(running, "m-fanout"), "both functions"
    )
    assert {g["function"] for g in got} == {"alpha", "beta"}
    event = next(g for g in got if g["function"] == "alpha")["event"]
    record = event["Records"][0]
    assert set(record) == {"EventSource", "EventVersion", "EventSubscriptionArn", "Sns"}
    assert record["EventSource"] == "aws:sns" and record["EventVersion"] == "1.0"
    assert record["EventSubscriptionArn"].startswith(ARN + "orders:")
    sns_doc = record["Sns"]
    assert sns_doc["Type"] == "Notification"
    assert sns_doc["MessageId"] == resp["MessageId"]
    assert sns_doc["TopicArn"] == ARN + "orders"
    assert sns_doc["Subject"] == "Hello"
    assert sns_doc["Message"] == "m-fanout"
    assert sns_doc["SignatureVersion"] == "1"
    assert sns_doc["Timestamp"].endswith("Z") and len(sns_doc["Timestamp"]) == 24
    assert sns_doc["UnsubscribeUrl"].endswith(record["EventSubscriptionArn"])
    assert sns_doc["MessageAttributes"] == {
        "kind": {"Type": "String", "Value": "big"},
        "price": {"Type": "Number", "Value": "42"},
        "tags": {"Type": "String.Array", "Value": '["a", 1]'},
        "blob": {"Type": "Binary", "Value": "AAE="},
    }
    # aws-lambda-powertools' model of the event (AWS's field names and types) accepts it.
    from aws_lambda_powertools.utilities.parser.models import SnsModel

    SnsModel.model_validate(event)


async def test_a_poison_message_ends_in_the_subscribers_on_failure_destination_alone(
    running: Running,
) -> None:
    """The function fails on one message every time: Publish still answers (the deliveries are
    queued), that message's asynchronous invocation record goes to the function's destination,
    and the messages published after it are invoked."""
    sns = running.client()
    ids = {}
    for message in ("fail: poison", "fine-after-1", "fine-after-2"):
        resp = await call(sns.publish, TopicArn=ARN + "fragile", Message=message)
        ids[message] = resp["MessageId"]
    await wait_for(
        lambda: of(running, "fine-after-1", "fragile") and of(running, "fine-after-2", "fragile"),
        "the messages after the poison",
    )
    dlq = running.tmp / "sns-dlq.jsonl"
    await wait_for(lambda: dlq.exists() and dlq.read_text().strip(), "the failure record")
    await drained(running.daemon, "fragile")
    [failed] = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert failed["requestContext"]["condition"] == "RetriesExhausted"
    assert failed["requestContext"]["approximateInvokeCount"] == 1
    assert failed["requestContext"]["functionArn"].endswith(":function:fragile:$LATEST")
    sns_doc = failed["requestPayload"]["Records"][0]["Sns"]
    assert (sns_doc["MessageId"], sns_doc["Message"]) == (ids["fail: poison"], "fail: poison")
    assert failed["responsePayload"]["errorType"] == "ValueError"


async def test_attribute_filter_policy_decides_who_gets_a_message(running: Running) -> None:
    sns = running.client()

    async def publish(marker: str, **attrs: tuple[str, str]) -> None:
        await call(
            sns.publish,
            TopicArn=ARN + "orders",
            Message=marker,
            MessageAttributes={k: {"DataType": t, "StringValue": v} for k, (t, v) in attrs.items()},
        )

    await publish("p-small", kind=("String", "small"), price=("Number", "50"))
    await publish("p-cheap", kind=("String", "big"), price=("Number", "5"))
    await publish("p-none")
    await publish("p-huge", kind=("String", "huge-one"), price=("Number", "100"))
    await publish("q-last", kind=("String", "big"), price=("Number", "11"))
    await settled(running, "q-last", "beta")
    await wait_for(lambda: len(of(running, "p-", "alpha")) == 4, "alpha gets everything")
    assert [g["event"]["Records"][0]["Sns"]["Message"] for g in of(running, "p-", "beta")] == [
        "p-huge"
    ]
    assert (await call(sns.publish, TopicArn=ARN + "orders", Message="x"))["MessageId"]


async def test_body_filter_policy_matches_the_json_body(running: Running) -> None:
    sns = running.client()
    for body in (
        '{"status": "ok", "b": "b-ok"}',
        '{"status": "bad", "b": "b-bad"}',
        "b-not-json",
        '{"b": "b-nostatus"}',
    ):
        await call(sns.publish, TopicArn=ARN + "bodies", Message=body)
    await call(sns.publish, TopicArn=ARN + "bodies", Message='{"status": "ok", "m": "z-last"}')
    await settled(running, "z-last", "beta")
    assert [
        json.loads(g["event"]["Records"][0]["Sns"]["Message"])["b"] for g in of(running, '"b-')
    ] == ["b-ok"]
    assert not of(running, "b-not-json")


async def test_topics_and_subscriptions_through_the_api(running: Running) -> None:
    sns = running.client()
    created = await call(sns.create_topic, Name="api-topic")
    arn = created["TopicArn"]
    assert arn == ARN + "api-topic"
    assert (await call(sns.create_topic, Name="api-topic"))["TopicArn"] == arn  # idempotent
    attrs = (await call(sns.get_topic_attributes, TopicArn=arn))["Attributes"]
    assert attrs["TopicArn"] == arn and attrs["Owner"] == ACCOUNT
    sub = await call(
        sns.subscribe,
        TopicArn=arn,
        Protocol="lambda",
        Endpoint=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:alpha",
        Attributes={"FilterPolicy": '{"go": ["yes"]}'},
        ReturnSubscriptionArn=True,
    )
    listed = (await call(sns.list_subscriptions_by_topic, TopicArn=arn))["Subscriptions"]
    assert [s["SubscriptionArn"] for s in listed] == [sub["SubscriptionArn"]]
    assert listed[0]["Protocol"] == "lambda" and listed[0]["Owner"] == ACCOUNT
    await call(sns.publish, TopicArn=arn, Message="api-no")
    await call(
        sns.publish,
        TopicArn=arn,
        Message="api-yes",
        MessageAttributes={"go": {"DataType": "String", "StringValue": "yes"}},
    )
    await settled(running, "api-yes", "alpha")
    assert not of(running, "api-no")
    stored = dict((a, k) for a, k, _ in await running.daemon.state.sns_list())  # type: ignore[union-attr]
    assert stored == {arn: "topic", sub["SubscriptionArn"]: "subscription"}
    await call(sns.unsubscribe, SubscriptionArn=sub["SubscriptionArn"])
    assert (await call(sns.list_subscriptions_by_topic, TopicArn=arn))["Subscriptions"] == []
    with pytest.raises(ClientError) as exc:
        await call(sns.unsubscribe, SubscriptionArn=sub["SubscriptionArn"])
    assert code(exc) == "NotFound"
    with pytest.raises(ClientError) as exc:
        await call(
            sns.subscribe,
            TopicArn=arn,
            Protocol="lambda",
            Endpoint=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:nope",
        )
    assert code(exc) == "InvalidParameter"


async def test_list_topics_pages_with_next_token(running: Running) -> None:
    sns = running.client()
    for i in range(101):
        await call(sns.create_topic, Name=f"page-{i:03d}")
    paginator = sns.get_paginator("list_topics")
    pages = await call(lambda: list(paginator.paginate()))
    assert len(pages) == 2 and len(pages[0]["Topics"]) == 100
    arns = [t["TopicArn"] for p in pages for t in p["Topics"]]
    assert len(arns) == len(set(arns)) and ARN + "page-100" in arns and ARN + "orders" in arns


async def test_list_subscriptions_lists_every_topics_subscriptions(running: Running) -> None:
    sns = running.client()
    arns = [(await call(sns.create_topic, Name=f"all-subs-{i}"))["TopicArn"] for i in range(2)]
    subs = [
        (
            await call(
                sns.subscribe,
                TopicArn=arn,
                Protocol="lambda",
                Endpoint=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:alpha",
                ReturnSubscriptionArn=True,
            )
        )["SubscriptionArn"]
        for arn in arns
    ]
    paginator = sns.get_paginator("list_subscriptions")
    pages = await call(lambda: list(paginator.paginate()))
    listed = {s["SubscriptionArn"]: s for p in pages for s in p["Subscriptions"]}
    for arn, sub in zip(arns, subs, strict=True):
        assert listed[sub]["TopicArn"] == arn and listed[sub]["Protocol"] == "lambda"
    by_topic = {s["TopicArn"] for s in listed.values()}
    assert ARN + "orders" in by_topic, "the config's subscriptions are listed too"
    await call(sns.unsubscribe, SubscriptionArn=subs[0])
    again = (await call(sns.list_subscriptions))["Subscriptions"]
    assert subs[0] not in {s["SubscriptionArn"] for s in again}


async def test_fifo_topic_keeps_order_per_group_and_deduplicates(running: Running) -> None:
    sns = running.client()
    ids = []
    for i in range(15):
        resp = await call(
            sns.publish,
            TopicArn=ARN + "events.fifo",
            # The first of each group is slow: with four invocations at once, the ones
            # behind it would overtake it if the group were not held back.
            Message=f"fifo-{i % 3}-{i}" + ("-slow" if i < 3 else ""),
            MessageGroupId=f"g{i % 3}",
            MessageDeduplicationId=f"d{i}",
        )
        ids.append(resp["MessageId"])
        assert resp["SequenceNumber"].isdigit()
    again = await call(
        sns.publish,
        TopicArn=ARN + "events.fifo",
        Message="fifo-dup",
        MessageGroupId="g0",
        MessageDeduplicationId="d0",
    )
    assert again["MessageId"] == ids[0]
    # A barrier: g0's last message, delivered after anything queued before it in its group
    # (the duplicate, had it been queued).
    await call(
        sns.publish,
        TopicArn=ARN + "events.fifo",
        Message="end-g0",
        MessageGroupId="g0",
        MessageDeduplicationId="end-g0",
    )
    await wait_for(lambda: of(running, "end-g0"), "the group's last message")
    got = await wait_for(
        lambda: len(of(running, "fifo-")) == 15 and of(running, "fifo-"), "15 FIFO deliveries"
    )
    for group in ("0", "1", "2"):
        seen = [
            g["event"]["Records"][0]["Sns"]["Message"]
            for g in got
            if g["event"]["Records"][0]["Sns"]["Message"].startswith(f"fifo-{group}-")
        ]
        assert seen == sorted(seen, key=lambda m: int(m.split("-")[2]))
        assert seen[0].endswith("-slow") and len(seen) == 5
    assert not of(running, "fifo-dup")
    with pytest.raises(ClientError) as exc:
        await call(sns.publish, TopicArn=ARN + "events.fifo", Message="no group")
    assert code(exc) == "InvalidParameter"
    with pytest.raises(ClientError) as exc:
        await call(sns.create_topic, Name="x.fifo")
    assert code(exc) == "InvalidParameter"
    fifo = await call(
        sns.create_topic,
        Name="made.fifo",
        Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"},
    )
    attrs = (await call(sns.get_topic_attributes, TopicArn=fifo["TopicArn"]))["Attributes"]
    assert attrs["FifoTopic"] == "true" and attrs["ContentBasedDeduplication"] == "true"


async def test_publish_batch_reports_each_entry(running: Running) -> None:
    sns = running.client()
    resp = await call(
        sns.publish_batch,
        TopicArn=ARN + "orders",
        PublishBatchRequestEntries=[
            {"Id": "one", "Message": "batch-1"},
            {
                "Id": "two",
                "Message": "batch-2",
                "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "abc"}},
            },
            {"Id": "three", "Message": "batch-3"},
        ],
    )
    assert [s["Id"] for s in resp["Successful"]] == ["one", "three"]
    assert resp["Failed"] == [
        {
            "Id": "two",
            "Code": "ParameterValueInvalid",
            "SenderFault": True,
            "Message": resp["Failed"][0]["Message"],
        }
    ]
    await wait_for(lambda: len(of(running, "batch-", "alpha")) == 2, "the batch's deliveries")
    entries = [{"Id": "same", "Message": "a"}, {"Id": "same", "Message": "b"}]
    with pytest.raises(ClientError) as exc:
        await call(sns.publish_batch, TopicArn=ARN + "orders", PublishBatchRequestEntries=entries)
    assert code(exc) == "BatchEntryIdsNotDistinct"
    many = [{"Id": f"e{i}", "Message": "m"} for i in range(11)]
    with pytest.raises(ClientError) as exc:
        await call(sns.publish_batch, TopicArn=ARN + "orders", PublishBatchRequestEntries=many)
    assert code(exc) == "TooManyEntriesInBatchRequest"


async def test_errors_are_aws_xml_that_boto3_parses(running: Running) -> None:
    sns = running.client()
    cases: list[tuple[Callable[..., Any], dict[str, Any], str, int]] = [
        (sns.publish, {"TopicArn": ARN + "missing", "Message": "m"}, "NotFound", 404),
        (
            sns.publish,
            {"TopicArn": ARN + "orders", "Message": "x" * 262_145},
            "InvalidParameter",
            400,
        ),
        (sns.get_topic_attributes, {"TopicArn": ARN + "missing"}, "NotFound", 404),
        (sns.create_topic, {"Name": "bad name!"}, "InvalidParameter", 400),
        (
            sns.subscribe,
            {"TopicArn": ARN + "orders", "Protocol": "email", "Endpoint": "a@b.c"},
            "InvalidParameter",
            400,
        ),
    ]
    for fn, kwargs, want, status in cases:
        with pytest.raises(ClientError) as exc:
            await call(fn, **kwargs)
        assert code(exc) == want, kwargs
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    publisher = running.client(PUB_ID, PUB_SECRET)
    await call(publisher.publish, TopicArn=ARN + "orders", Message="allowed")
    with pytest.raises(ClientError) as exc:
        await call(publisher.publish, TopicArn=ARN + "bodies", Message="denied")
    assert code(exc) == "AuthorizationError"
    with pytest.raises(ClientError) as exc:
        await call(publisher.create_topic, Name="denied")
    assert code(exc) == "AuthorizationError"
    # SNS's own codes for these (the Query protocol's, not the JSON APIs' ...Exception).
    forged = running.client(KEY_ID, "not-the-secret-at-all")
    with pytest.raises(ClientError) as exc:
        await call(forged.list_topics)
    assert code(exc) == "SignatureDoesNotMatch"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    stranger = running.client("AKIANOBODYKNOWS", "not-the-secret-at-all")
    with pytest.raises(ClientError) as exc:
        await call(stranger.list_topics)
    assert code(exc) == "InvalidClientTokenId"


async def test_hostile_requests_get_4xx(running: Running) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # Unsigned requests are refused before anything else.
    async with running.http.post(
        running.url + "/", data=b"Action=ListTopics", headers=form
    ) as resp:
        assert resp.status == 403
        assert b"<Code>MissingAuthenticationToken</Code>" in await resp.read()
    signer = Signer()
    for body, status in [
        (b"Action=Nope", 400),
        (b"Action=Publish&TopicArn=%ZZ&&&=", 400),
        (b"Action=Publish&" + b"a=b&" * 1200, 400),
        (b"\xff\xfe=\xff", 400),
        (b"Action=Publish&Message=" + b"x" * 900_000, 413),
    ]:
        headers = signer.sign(running.url, body)
        async with running.http.post(running.url + "/", data=body, headers=headers) as resp:
            text = await resp.read()
            assert resp.status == status, (body[:40], text[:300])
            assert b"<ErrorResponse" in text and b"<Code>" in text


class Signer:
    """Signs raw bodies with botocore, as a client would."""

    def sign(self, url: str, body: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        req = AWSRequest(
            method="POST",
            url=url + "/",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        SigV4Auth(Credentials(KEY_ID, SECRET), "sns", "us-east-1").add_auth(req)
        return dict(req.headers.items())


async def test_aws_cli_publishes(running: Running) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "awscli",
        "--endpoint-url",
        running.url,
        "sns",
        "publish",
        "--topic-arn",
        ARN + "orders",
        "--message",
        "cli-message",
        "--message-attributes",
        '{"kind": {"DataType": "String", "StringValue": "big"}}',
    ]
    done = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["MessageId"]
    await wait_for(lambda: of(running, "cli-message", "alpha"), "the CLI's message")


async def test_sqs_subscriptions_get_the_envelope_or_the_raw_message(running: Running) -> None:
    sns = running.client()
    sqs = sqs_client(running.moto)
    sent = await call(
        sns.publish,
        TopicArn=ARN + "orders",
        Message="to-sqs",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "small"}},
    )
    for i in range(3):
        await call(
            sns.publish,
            TopicArn=ARN + "events.fifo",
            Message=f"raw-{i}",
            MessageGroupId="q",
            MessageDeduplicationId=f"raw-{i}",
            MessageAttributes={
                "n": {"DataType": "Number", "StringValue": str(i)},
                "b": {"DataType": "Binary", "BinaryValue": b"\x01\x02"},
            },
        )

    def receive(name: str, want: int, body: str = "") -> list[dict[str, Any]]:
        url = f"{running.moto}/123456789012/{name}"
        got: list[dict[str, Any]] = []
        for _ in range(40):
            resp = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            )
            for m in resp.get("Messages", []):
                got.append(m)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            if len([m for m in got if body in m["Body"]]) >= want:
                return [m for m in got if body in m["Body"]]
        raise AssertionError(f"{name}: {len(got)} of {want} messages")

    std = [
        json.loads(m["Body"])
        for m in await call(receive, name=running.queues["std"], want=1, body="to-sqs")
    ]
    doc = next(d for d in std if d["Message"] == "to-sqs")
    assert doc["Type"] == "Notification" and doc["MessageId"] == sent["MessageId"]
    assert doc["TopicArn"] == ARN + "orders" and "Subject" not in doc
    assert doc["MessageAttributes"] == {"kind": {"Type": "String", "Value": "small"}}
    assert {"SigningCertURL", "UnsubscribeURL", "Signature", "Timestamp"} <= set(doc)
    raw = await call(receive, name=running.queues["fifo"], want=3, body="raw-")
    assert [m["Body"] for m in raw] == ["raw-0", "raw-1", "raw-2"]
    assert raw[2]["MessageAttributes"]["n"] == {"DataType": "Number", "StringValue": "2"}
    assert raw[2]["MessageAttributes"]["b"]["BinaryValue"] == b"\x01\x02"


async def test_an_sqs_queue_subscribed_through_the_api_gets_its_filtered_raw_messages(
    running: Running,
) -> None:
    sns = running.client()
    topic = (await call(sns.create_topic, Name="api-sqs"))["TopicArn"]
    queue = running.queues["std"]
    sub = await call(
        sns.subscribe,
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=f"arn:aws:sqs:us-east-1:{ACCOUNT}:{queue}",
        Attributes={"RawMessageDelivery": "true", "FilterPolicy": '{"go": ["yes"]}'},
        ReturnSubscriptionArn=True,
    )
    listed = (await call(sns.list_subscriptions_by_topic, TopicArn=topic))["Subscriptions"]
    assert [(s["SubscriptionArn"], s["Protocol"]) for s in listed] == [
        (sub["SubscriptionArn"], "sqs")
    ]
    for go in ("no", "yes"):
        await call(
            sns.publish,
            TopicArn=topic,
            Message=f"api-sqs-{go}",
            MessageAttributes={"go": {"DataType": "String", "StringValue": go}},
        )
    sqs = sqs_client(running.moto)
    url = f"{running.moto}/{ACCOUNT}/{queue}"
    bodies: list[str] = []
    # The queue's sends go out in publish order: once the second message is there, the
    # first would be too had the filter let it through.
    for _ in range(40):
        resp = await call(
            sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for m in resp.get("Messages", []):
            bodies.append(m["Body"])
            await call(sqs.delete_message, QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if "api-sqs-yes" in bodies:
            break
    assert [b for b in bodies if "api-sqs" in b] == ["api-sqs-yes"]  # raw: the message itself


async def test_topics_made_through_the_api_survive_a_restart(tmp_path: Path) -> None:
    registry = Registry.discover()
    data = {
        "daemon": {
            "state": f"sqlite:///{tmp_path / 'state.db'}",
            "listen": "",
            "control_listen": "127.0.0.1:0",
            "work_dir": str(tmp_path / "run"),
            "shutdown_timeout_s": 5,
        },
        "functions": {"alpha": _fn(tmp_path)},
        "sns": {},
    }

    def client(d: Daemon) -> Any:
        return boto3.client(
            "sns",
            endpoint_url=f"http://{d.control_address}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=NO_RETRIES,
        )

    cfg = validate_data(data, registry, base_dir=tmp_path)
    async with Daemon(cfg, registry).running() as d:
        sns = client(d)
        arn = (await call(sns.create_topic, Name="kept"))["TopicArn"]
        sub = await call(
            sns.subscribe,
            TopicArn=arn,
            Protocol="lambda",
            Endpoint=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:alpha",
            Attributes={"FilterPolicy": '{"x": ["1"]}'},
        )
    async with Daemon(cfg, registry).running() as d:
        sns = client(d)
        assert [t["TopicArn"] for t in (await call(sns.list_topics))["Topics"]] == [arn]
        subs = (await call(sns.list_subscriptions_by_topic, TopicArn=arn))["Subscriptions"]
        assert [s["SubscriptionArn"] for s in subs] == [sub["SubscriptionArn"]]
        for x in ("0", "1"):
            await call(
                sns.publish,
                TopicArn=arn,
                Message=f"kept-{x}",
                MessageAttributes={"x": {"DataType": "String", "StringValue": x}},
            )
        path = tmp_path / "calls.jsonl"
        await wait_for(lambda: path.exists() and "kept-1" in path.read_text(), "the delivery")
        await drained(d, "alpha")
        assert "kept-0" not in path.read_text()
