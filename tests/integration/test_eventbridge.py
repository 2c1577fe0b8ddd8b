"""EventBridge-compatible buses served by an in-process daemon, called with boto3's `events`
client and the AWS CLI (`aws events put-events --endpoint-url`) signed with configured
access keys: several rules with patterns and input transformers on one bus, two functions
receiving exactly the expected payloads, per-entry failures, and hostile requests."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import pytest_asyncio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from click.testing import CliRunner

from tests.integration.aws_cli import run_aws_cli
from tests.integration.invoke_daemon import registry, wait_until
from triggerd.cli.main import main
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.delivery.destinations import file_plugin

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),
]

FUNCTION_DIR = Path(__file__).parent / "functions" / "eventbridge"
PUTTER = ("AKIAPUTTER", "putter-secret-0123456789abcdef")
READER = ("AKIAREADER", "reader-secret-0123456789abcdef")
INVOKER = ("AKIAINVOKER", "invoker-secret-0123456789abcdef")
REPLAYER = ("AKIAREPLAYER", "replayer-secret-0123456789abcdef")
NO_RETRIES = Config(retries={"max_attempts": 0, "mode": "standard"}, read_timeout=30)
ACCOUNT = "123456789012"
BUS_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/"
RULE_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/"
ARCHIVE_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:archive/shop-archive"

TEMPLATE = (
    '{"order": <id>, "text": "<customer> paid <amount>", "items": <skus>, '
    '"rule": "<aws.events.rule-name>", "arn": <aws.events.rule-arn>, "missing": <nope>}'
)


def function(tmp: Path, label: str) -> dict[str, Any]:
    return {
        "handler": "app.handler",
        "code": str(FUNCTION_DIR),
        "timeout_s": 5,
        "environment": {"RECORD_FILE": str(tmp / "calls.jsonl"), "LABEL": label},
    }


def config(tmp: Path) -> dict[str, Any]:
    return {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "work_dir": str(tmp / "run"),
            "shutdown_timeout_s": 5,
            "listen": "",
            "control_listen": "127.0.0.1:0",
            "access_keys": [
                {
                    "access_key_id": PUTTER[0],
                    "secret_access_key": PUTTER[1],
                    "actions": ["events:PutEvents"],
                    "resources": [BUS_ARN + "*"],
                },
                {
                    "access_key_id": READER[0],
                    "secret_access_key": READER[1],
                    "actions": ["events:List*", "events:DescribeRule"],
                },
                {
                    "access_key_id": REPLAYER[0],
                    "secret_access_key": REPLAYER[1],
                    "actions": ["events:StartReplay"],
                    "resources": [ARCHIVE_ARN],
                },
                {
                    "access_key_id": INVOKER[0],
                    "secret_access_key": INVOKER[1],
                    "actions": ["lambda:InvokeFunction"],
                },
            ],
        },
        "functions": {
            "orders": function(tmp, "orders"),
            "audit": function(tmp, "audit"),
            "fragile": function(tmp, "fragile"),
        },
        "async_invocation": {
            "fragile": {
                "maximum_retry_attempts": 0,
                "on_failure": {"type": "file", "path": str(tmp / "failed.jsonl")},
            }
        },
        "event_buses": [
            {
                "rules": [
                    {
                        "name": "big-orders",
                        "description": "orders over 100",
                        "event_pattern": {
                            "source": ["com.shop"],
                            "detail-type": ["Order Placed"],
                            "detail": {"amount": [{"numeric": [">", 100]}]},
                        },
                        "targets": [
                            {
                                "function": "orders",
                                "input_transformer": {
                                    "input_paths_map": {
                                        "id": "$.detail.id",
                                        "amount": "$.detail.amount",
                                        "customer": "$.detail.customer.name",
                                        "skus": "$.detail.items[*].sku",
                                        "nope": "$.detail.absent",
                                    },
                                    "input_template": TEMPLATE,
                                },
                            },
                            {"function": "audit", "input_path": "$.detail.customer"},
                        ],
                    },
                    {
                        "name": "all-shop",
                        "event_pattern": {"source": [{"prefix": "com.shop"}]},
                        "targets": [
                            {"function": "audit", "id": "audit-all", "input": {"seen": True}}
                        ],
                    },
                    {
                        "name": "fragile-jobs",
                        "event_pattern": {"source": ["jobs"]},
                        "targets": [{"function": "fragile"}],
                    },
                    {
                        "name": "switched-off",
                        "state": "DISABLED",
                        "event_pattern": {"source": [{"prefix": "com"}]},
                        "targets": [{"function": "orders"}],
                    },
                ]
            },
            {
                "name": "shop",
                "archive": {"retention_days": 1},
                "rules": [
                    {
                        "name": "internal-logins",
                        "event_pattern": {
                            "detail-type": [{"anything-but": {"prefix": "Test"}}],
                            "detail": {
                                "ip": [{"cidr": "10.0.0.0/24"}],
                                "$or": [
                                    {"user": [{"equals-ignore-case": "ADMIN"}]},
                                    {"path": [{"wildcard": "*/admin/*"}]},
                                ],
                            },
                        },
                        "targets": [{"function": "orders"}],
                    }
                ],
            },
        ],
    }


def with_file_destination() -> Registry:
    reg = registry()
    reg.register("destination", "file", file_plugin)
    return reg


@dataclass
class Running:
    daemon: Daemon
    control: str
    tmp: Path
    http: aiohttp.ClientSession

    def calls(self) -> list[dict[str, Any]]:
        path = self.tmp / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def reset(self) -> None:
        (self.tmp / "calls.jsonl").unlink(missing_ok=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def r(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("eventbridge")
    cfg = validate_data(config(tmp), with_file_destination(), base_dir=tmp)
    server = Daemon(cfg, with_file_destination())
    async with server.running() as daemon, aiohttp.ClientSession() as http:
        assert daemon.control_address is not None
        yield Running(daemon, f"http://{daemon.control_address}", tmp, http)


def events(r: Running, keys: tuple[str, str] = PUTTER, **config: Any) -> Any:
    return boto3.client(
        "events",
        endpoint_url=r.control,
        region_name="us-east-1",
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        config=NO_RETRIES.merge(Config(**config)) if config else NO_RETRIES,
    )


async def call(method: Any, **kw: Any) -> Any:
    """A blocking client call, off the loop the daemon runs in."""
    return await asyncio.to_thread(method, **kw)


async def drained(r: Running, *functions: str) -> None:
    """A positive barrier: PutEvents commits every invocation before it answers, so once
    these functions' Event queues are empty every event routed to them has been invoked and
    recorded; what is not in calls.jsonl by then was never routed."""
    state = r.daemon.state
    assert state is not None
    queues = [r.daemon.invoke_queues[f].name for f in functions]

    async def empty() -> bool:
        return all([await state.queue_depth(q) == 0 for q in queues])

    await wait_until(empty, 30, f"the queues of {functions} to drain")


def order(i: int, amount: float, source: str = "com.shop") -> dict[str, Any]:
    detail = {
        "id": i,
        "amount": amount,
        "customer": {"name": f'Ann "{i}"', "tier": "gold"},
        "items": [{"sku": "a"}, {"sku": "b"}],
    }
    return {"Source": source, "DetailType": "Order Placed", "Detail": json.dumps(detail)}


async def test_rules_route_matching_events_to_two_functions_with_their_inputs(
    r: Running,
) -> None:
    r.reset()
    client = events(r)
    resp = await call(
        client.put_events,
        Entries=[
            order(1, 250),
            order(2, 50),
            order(3, 500, source="com.shopping"),
            order(4, 5, "org"),
        ],
    )
    assert resp["FailedEntryCount"] == 0
    ids = [e["EventId"] for e in resp["Entries"]]
    assert len(set(ids)) == 4
    # order 1: big-orders (orders + audit) and all-shop (audit); order 2: all-shop only;
    # order 3: all-shop only (source com.shopping is not com.shop); order 4: nothing.
    await wait_until(lambda: len(r.calls()) >= 5, 30, "five deliveries")
    await drained(r, "orders", "audit")
    got = r.calls()
    assert len(got) == 5, got
    orders = [c["event"] for c in got if c["label"] == "orders"]
    assert orders == [
        {
            "order": 1,
            "text": 'Ann "1" paid 250',
            "items": ["a", "b"],
            "rule": "big-orders",
            "arn": RULE_ARN + "big-orders",
            "missing": None,
        }
    ]
    audit = [c["event"] for c in got if c["label"] == "audit"]
    assert sorted(audit, key=json.dumps) == sorted(
        [{"name": 'Ann "1"', "tier": "gold"}, {"seen": True}, {"seen": True}, {"seen": True}],
        key=json.dumps,
    )


async def test_a_target_without_input_gets_the_eventbridge_event(r: Running) -> None:
    r.reset()
    detail = {"ip": "10.0.0.7", "user": "admin"}
    resp = await call(
        events(r).put_events,
        Entries=[
            {
                "Source": "corp.auth",
                "DetailType": "Login",
                "Detail": json.dumps(detail),
                "Resources": ["arn:aws:iam::123456789012:user/ann"],
                "Time": "2024-05-01T12:00:00.750Z",
                "EventBusName": BUS_ARN + "shop",
            },
            {  # outside the network
                "Source": "corp.auth",
                "DetailType": "Login",
                "Detail": json.dumps({"ip": "10.0.1.7", "user": "admin"}),
                "EventBusName": "shop",
            },
            {  # a test event
                "Source": "corp.auth",
                "DetailType": "Test Login",
                "Detail": json.dumps(detail),
                "EventBusName": "shop",
            },
            {  # the $or's second branch
                "Source": "corp.auth",
                "DetailType": "Login",
                "Detail": json.dumps({"ip": "10.0.0.9", "path": "/x/admin/y"}),
                "EventBusName": "shop",
            },
        ],
    )
    assert resp["FailedEntryCount"] == 0
    await wait_until(lambda: len(r.calls()) >= 2, 30, "two deliveries")
    await drained(r, "orders", "audit")
    got = sorted((c["event"] for c in r.calls()), key=lambda e: e["detail"]["ip"])
    assert len(got) == 2
    first = got[0]
    assert first == {
        "version": "0",
        "id": resp["Entries"][0]["EventId"],
        "detail-type": "Login",
        "source": "corp.auth",
        "account": ACCOUNT,
        "time": "2024-05-01T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:iam::123456789012:user/ann"],
        "detail": detail,
    }
    assert got[1]["id"] == resp["Entries"][3]["EventId"]


async def test_entries_fail_one_by_one_with_aws_error_codes(r: Running) -> None:
    client = events(r)
    entries = [
        order(10, 1, source="org.none"),
        {"DetailType": "x", "Detail": "{}"},
        {"Source": "a", "DetailType": "x", "Detail": "[1, 2]"},
        {"Source": "a", "DetailType": "x", "Detail": "{not json"},
        {"Source": "a", "DetailType": "x", "Detail": "{}", "EventBusName": "nowhere"},
        {"Source": "aws.ec2", "DetailType": "x", "Detail": "{}"},
        {"Source": "a", "Detail": "{}"},
    ]
    resp = await call(client.put_events, Entries=entries)
    assert resp["FailedEntryCount"] == 6
    results = resp["Entries"]
    assert "EventId" in results[0]
    codes = [e.get("ErrorCode") for e in results[1:]]
    assert codes == [
        "InvalidArgument",
        "MalformedDetail",
        "MalformedDetail",
        "ResourceNotFoundException",
        "NotAuthorizedForSourceException",
        "InvalidArgument",
    ]
    assert "Source" in results[1]["ErrorMessage"]
    assert "DetailType" in results[6]["ErrorMessage"]


async def test_request_limits_are_validation_errors(r: Running) -> None:
    unchecked = events(r, parameter_validation=False)
    with pytest.raises(ClientError) as too_many:
        await call(unchecked.put_events, Entries=[order(i, 1) for i in range(11)])
    assert too_many.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as none:
        await call(unchecked.put_events, Entries=[])
    assert none.value.response["Error"]["Code"] == "ValidationException"
    big = json.dumps({"blob": "x" * (200 * 1024)})
    entries = [{"Source": "a", "DetailType": "b", "Detail": big}] * 2
    with pytest.raises(ClientError) as oversize:
        await call(events(r).put_events, Entries=entries)
    assert oversize.value.response["Error"]["Code"] == "ValidationException"
    assert "size" in oversize.value.response["Error"]["Message"]
    # Exactly at the limit is fine: sizes count Source, DetailType, Detail (and 14 per Time).
    detail = json.dumps({"b": "y" * (256 * 1024 - 12)})
    exact = {"Source": "a", "DetailType": "b", "Detail": detail}
    assert len("a") + len("b") + len(detail) == 256 * 1024 - 1
    resp = await call(events(r).put_events, Entries=[exact])
    assert resp["FailedEntryCount"] == 0


async def test_signatures_and_policies_are_enforced(r: Running) -> None:
    wrong = (PUTTER[0], "not-the-secret-0123456789")
    with pytest.raises(ClientError) as bad_sig:
        await call(events(r, wrong).put_events, Entries=[order(20, 1)])
    assert bad_sig.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert bad_sig.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as denied:
        await call(events(r, INVOKER).put_events, Entries=[order(21, 1)])
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(ClientError) as reads:
        await call(events(r, PUTTER).list_rules)
    assert reads.value.response["Error"]["Code"] == "AccessDeniedException"


async def test_buses_rules_and_targets_can_be_read(r: Running) -> None:
    client = events(r, READER)
    buses = await call(client.list_event_buses)
    assert [b["Name"] for b in buses["EventBuses"]] == ["default", "shop"]
    assert buses["EventBuses"][1]["Arn"] == BUS_ARN + "shop"
    rules = await call(client.list_rules, Limit=2)
    assert [x["Name"] for x in rules["Rules"]] == ["big-orders", "all-shop"]
    more = await call(client.list_rules, Limit=2, NextToken=rules["NextToken"])
    assert [x["Name"] for x in more["Rules"]] == ["fragile-jobs", "switched-off"]
    assert more["Rules"][1]["State"] == "DISABLED"
    rule = await call(client.describe_rule, Name="internal-logins", EventBusName="shop")
    assert rule["Arn"] == RULE_ARN + "shop/internal-logins"
    assert json.loads(rule["EventPattern"])["detail"]["ip"] == [{"cidr": "10.0.0.0/24"}]
    targets = await call(client.list_targets_by_rule, Rule="big-orders")
    assert [t["Id"] for t in targets["Targets"]] == ["orders", "audit"]
    assert targets["Targets"][0]["InputTransformer"]["InputTemplate"] == TEMPLATE
    assert targets["Targets"][1]["InputPath"] == "$.detail.customer"
    with pytest.raises(ClientError) as missing:
        await call(client.describe_rule, Name="nope")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def signed(r: Running, target: str, body: bytes, keys: tuple[str, str] = PUTTER) -> AWSRequest:
    req = AWSRequest(
        method="POST",
        url=r.control + "/",
        data=body,
        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
    )
    SigV4Auth(Credentials(*keys), "events", "us-east-1").add_auth(req)
    return req


async def post(r: Running, req: AWSRequest) -> tuple[int, dict[str, Any]]:
    body = io.BytesIO(req.body if isinstance(req.body, bytes) else b"")
    async with r.http.post(req.url, data=body, headers=dict(req.headers)) as resp:
        return resp.status, json.loads(await resp.read() or b"{}")


async def test_hostile_requests_get_4xx_in_aws_shape(r: Running) -> None:
    status, doc = await post(r, signed(r, "AWSEvents.PutEvents", b"{not json"))
    assert (status, doc["__type"]) == (400, "SerializationException")
    status, doc = await post(r, signed(r, "AWSEvents.PutEvents", b"[1, 2]"))
    assert (status, doc["__type"]) == (400, "SerializationException")
    status, doc = await post(r, signed(r, "AWSEvents.PutEvents", b'{"Entries": [1]}'))
    assert (status, doc["__type"]) == (400, "SerializationException")
    status, doc = await post(r, signed(r, "AWSEvents.DeleteRule", b'{"Name": "x"}'))
    assert (status, doc["__type"]) == (400, "UnknownOperationException")
    status, doc = await post(r, signed(r, "AWSEvents.PutEvents", b'{"Entries": "x"}'))
    assert (status, doc["__type"]) == (400, "ValidationException")
    entry = {"Source": "a", "DetailType": "b", "Detail": "{}", "Bogus": 1}
    status, doc = await post(
        r, signed(r, "AWSEvents.PutEvents", json.dumps({"Entries": [entry]}).encode())
    )
    assert status == 200 and doc["Entries"][0]["ErrorCode"] == "InvalidArgument"
    huge = b'{"Entries": [{"Source": "' + b"x" * (1100 * 1024) + b'"}]}'
    status, doc = await post(r, signed(r, "AWSEvents.PutEvents", huge))
    assert (status, doc["__type"]) == (413, "RequestEntityTooLargeException")
    async with r.http.post(
        r.control + "/", data=b"{}", headers={"X-Amz-Target": "AWSEvents.PutEvents"}
    ) as resp:
        assert resp.status == 403
        assert (await resp.json(content_type=None))[
            "__type"
        ] == "MissingAuthenticationTokenException"


async def test_the_aws_cli_puts_events(r: Running) -> None:
    r.reset()
    entries = json.dumps([order(30, 101)])
    done = await run_aws_cli(r.control, PUTTER, r.tmp, "events", "put-events", "--entries", entries)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["FailedEntryCount"] == 0 and "EventId" in out["Entries"][0]
    await wait_until(lambda: len(r.calls()) >= 3, 30, "three deliveries")
    assert {c["event"].get("order") for c in r.calls() if c["label"] == "orders"} == {30}


async def test_archived_events_are_replayed_with_their_replay_name(r: Running) -> None:
    r.reset()
    since = time.time()
    login = {
        "Source": "corp.auth",
        "DetailType": "Login",
        "Detail": json.dumps({"ip": "10.0.0.8", "user": "Admin"}),
        "EventBusName": "shop",
    }
    put = await call(events(r).put_events, Entries=[login])
    await wait_until(lambda: len(r.calls()) >= 1, 30, "the first delivery")
    r.reset()
    replayer = events(r, REPLAYER)
    resp = await call(
        replayer.start_replay,
        ReplayName="again-1",
        EventSourceArn=ARCHIVE_ARN,
        EventStartTime=since,
        EventEndTime=time.time() + 1,
        Destination={"Arn": BUS_ARN + "shop"},
    )
    assert resp["State"] == "COMPLETED"
    assert resp["StateReason"] == "1 events replayed, 1 invocations queued"
    await wait_until(lambda: len(r.calls()) >= 1, 30, "the replayed delivery")
    (replayed,) = [c["event"] for c in r.calls()]
    assert replayed["id"] == put["Entries"][0]["EventId"]
    assert replayed["replay-name"] == "again-1"
    assert replayed["detail"] == {"ip": "10.0.0.8", "user": "Admin"}

    # The command line asks the daemon the same, signed with the environment's key.
    r.reset()
    config_file = r.tmp / "cli.yaml"
    data = config(r.tmp)
    data["daemon"]["control_listen"] = r.daemon.control_address
    config_file.write_text(json.dumps(data))  # JSON is YAML: the loader reads it
    env = {"AWS_ACCESS_KEY_ID": REPLAYER[0], "AWS_SECRET_ACCESS_KEY": REPLAYER[1]}
    args = ["events", "replay", "shop", "--since", "10m", "--rule", "internal-logins"]
    done = await asyncio.to_thread(
        CliRunner().invoke, main, [*args, "-c", str(config_file)], env=env
    )
    assert done.exit_code == 0, done.output
    assert "events replayed" in done.output
    await wait_until(lambda: len(r.calls()) >= 1, 30, "the CLI's replayed delivery")
    assert all(c["event"]["replay-name"].startswith("replay-") for c in r.calls())
    with pytest.raises(ClientError) as denied:
        await call(
            events(r).start_replay,
            ReplayName="x",
            EventSourceArn=ARCHIVE_ARN,
            EventStartTime=since,
            EventEndTime=time.time(),
            Destination={"Arn": BUS_ARN + "shop"},
        )
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"


async def test_an_event_the_function_fails_goes_to_its_on_failure_destination(
    r: Running,
) -> None:
    resp = await call(
        events(r).put_events,
        Entries=[{"Source": "jobs", "DetailType": "Job", "Detail": json.dumps({"fail": 1})}],
    )
    failed = r.tmp / "failed.jsonl"
    await wait_until(failed.exists, 30, "the on-failure record")
    await wait_until(lambda: failed.read_text().endswith("\n"), 60, "a whole line")
    record = json.loads(failed.read_text().splitlines()[0])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestContext"]["functionArn"].endswith(":function:fragile:$LATEST")
    assert record["requestPayload"]["id"] == resp["Entries"][0]["EventId"]
    assert record["responsePayload"]["errorMessage"] == "asked to fail"
