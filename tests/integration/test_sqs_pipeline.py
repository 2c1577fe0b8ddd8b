"""The sqs source through the whole daemon (in-process, local backend) against moto_server:
deletes only after success, partial batch failures, FIFO ordering, visibility heartbeat,
filters, the queue's redrive policy, poison messages to the on-failure destinations."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sqs_harness import (
    calls,
    delivered,
    depth,
    drain,
    make_queue,
    queue_arn,
    running_daemon,
    send_json,
    sqs_client,
    wait_until,
    wait_until_async,
)
from triggerd.delivery.destinations import read_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("aws_env")]


def src(url: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"type": "sqs", "queue_url": url, "endpoint_url": endpoint, "wait_time_s": 1, **extra}


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [json.loads(r["body"])["id"] for r in records]


async def test_messages_are_deleted_only_after_the_function_succeeded(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c)
        await send_json(c, url, [{"id": "m1", "sleep": 2}])
        async with running_daemon(tmp_path, src(url, moto_server)):
            await wait_until_async(
                lambda: _in_flight(c, url), 15, "the message to be received (in flight)"
            )
            assert not delivered(tmp_path / "calls.jsonl"), "still invoking"
            assert await depth(c, url) == 1, "not deleted while the function runs"
            await wait_until(lambda: bool(delivered(tmp_path / "calls.jsonl")), 60, "the call")
            await wait_until_async(lambda: _empty(c, url), 10, "the delete")
        assert ids(delivered(tmp_path / "calls.jsonl")) == ["m1"]


async def _in_flight(c: Any, url: str) -> bool:
    a = (await c.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    return a["ApproximateNumberOfMessagesNotVisible"] == "1"


async def _empty(c: Any, url: str) -> bool:
    return await depth(c, url) == 0


async def test_partial_batch_failure_deletes_only_the_succeeded_ones(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, VisibilityTimeout="1")
        bodies = [{"id": "ok1"}, {"id": "bad", "fail": "once"}, {"id": "ok2"}, {"id": "ok3"}]
        await send_json(c, url, bodies)
        async with running_daemon(
            tmp_path,
            src(url, moto_server),
            env={"REPORT": "1"},
            report_batch_item_failures=True,
            batch_size=10,
            batching_window_s=1,
        ):
            await wait_until(
                lambda: ids(delivered(tmp_path / "calls.jsonl")).count("bad") == 2,
                20,
                "the failed message to come back",
            )
            await wait_until_async(lambda: _empty(c, url), 10, "every delete")
        records = delivered(tmp_path / "calls.jsonl")
        got = ids(records)
        assert sorted(got) == ["bad", "bad", "ok1", "ok2", "ok3"], (
            "succeeded ones never redelivered"
        )
        counts = [r["attributes"]["ApproximateReceiveCount"] for r in records if "bad" in r["body"]]
        assert counts == ["1", "2"]


async def test_malformed_partial_response_deletes_nothing(tmp_path: Path, moto_server: str) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, VisibilityTimeout="1")
        await send_json(c, url, [{"id": "a"}, {"id": "b"}])
        async with running_daemon(
            tmp_path,
            src(url, moto_server),
            env={"MODE": "malformed"},
            report_batch_item_failures=True,
            batching_window_s=1,
        ):
            await wait_until(
                lambda: sorted(ids(delivered(tmp_path / "calls.jsonl"))) == ["a", "a", "b", "b"],
                20,
                "both messages delivered twice",
            )
        assert await depth(c, url) == 2, "nothing was deleted"


async def test_fifo_failure_blocks_only_its_group_and_keeps_order(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, fifo=True, VisibilityTimeout="1")
        for body in [{"id": "a1", "fail": "once"}, {"id": "a2"}, {"id": "a3"}]:
            await send_json(c, url, [body], MessageGroupId="A")
        for body in [{"id": "b1"}, {"id": "b2"}, {"id": "b3"}]:
            await send_json(c, url, [body], MessageGroupId="B")
        # nack_visibility_timeout_s=0: moto (unlike SQS) hands out the *last* message of a group
        # first when several of them become visible again by timing out together.
        async with running_daemon(
            tmp_path,
            src(url, moto_server, nack_visibility_timeout_s=0),
            env={"REPORT": "1"},
            report_batch_item_failures=True,
            batch_size=2,
            maximum_concurrency=2,
        ):
            await wait_until_async(lambda: _empty(c, url), 30, "every message deleted")
        records = delivered(tmp_path / "calls.jsonl")
    trace = [
        [(json.loads(r["body"])["id"], r["attributes"]["ApproximateReceiveCount"]) for r in call]
        for call in (c["event"]["Records"] for c in calls(tmp_path / "calls.jsonl"))
    ]
    group_b = [r for r in records if r["attributes"]["MessageGroupId"] == "B"]
    assert ids(group_b) == ["b1", "b2", "b3"], "group B ran once, in order"
    assert all(r["attributes"]["ApproximateReceiveCount"] == "1" for r in group_b)
    group_a = [r for r in records if r["attributes"]["MessageGroupId"] == "A"]
    seq = ids(group_a)
    first_fail = seq.index("a1")
    after = seq[first_fail + 1 :]
    # After a1 failed, the only A messages before a1's redelivery are the ones that were in the
    # same invocation behind it (failed with it); nothing of A ran ahead of a1.
    redelivered = after.index("a1")
    assert set(after[:redelivered]) <= {"a2"}, trace
    assert after[redelivered:] == ["a1", "a2", "a3"], trace


async def test_visibility_is_extended_while_the_function_is_slow(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, VisibilityTimeout="2")
        await send_json(c, url, [{"id": "slow", "sleep": 5}])
        async with running_daemon(tmp_path, src(url, moto_server), maximum_concurrency=4):
            await wait_until(lambda: bool(delivered(tmp_path / "calls.jsonl")), 60, "the call")
            await wait_until_async(lambda: _empty(c, url), 10, "the delete")
        assert ids(delivered(tmp_path / "calls.jsonl")) == ["slow"], "never received twice"


async def test_filtered_out_messages_are_deleted_without_an_invocation(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c)
        await send_json(c, url, [{"id": "k1", "kind": "keep"}, {"id": "d1", "kind": "drop"}])
        await c.send_message(QueueUrl=url, MessageBody="plain text, not JSON")
        await send_json(c, url, [{"id": "k2", "kind": "keep"}])
        async with running_daemon(
            tmp_path,
            src(url, moto_server),
            filters=[{"body": {"kind": ["keep"]}}],
            batching_window_s=1,
        ):
            await wait_until_async(lambda: _empty(c, url), 15, "every message deleted")
            await wait_until(
                lambda: len(delivered(tmp_path / "calls.jsonl")) == 2, 10, "the kept ones"
            )
        assert sorted(ids(delivered(tmp_path / "calls.jsonl"))) == ["k1", "k2"]


async def test_queue_redrive_policy_moves_a_failing_message_to_its_dlq(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        dlq = await make_queue(c, "dlq")
        policy = json.dumps({"deadLetterTargetArn": await queue_arn(c, dlq), "maxReceiveCount": 2})
        url = await make_queue(c, VisibilityTimeout="1", RedrivePolicy=policy)
        await send_json(c, url, [{"id": "poison", "fail": "always"}])
        async with running_daemon(tmp_path, src(url, moto_server)):
            await wait_until_async(lambda: _nonempty(c, dlq), 30, "the message in the DLQ")
        moved = await drain(c, dlq)
        assert [json.loads(m["Body"])["id"] for m in moved] == ["poison"]
        # maxReceiveCount 2: two failed invocations (the function records, then raises), then
        # the queue itself moved the message on the third receive.
        assert ids(delivered(tmp_path / "calls.jsonl")) == ["poison", "poison"]


async def test_a_redrive_policy_that_ends_retries_before_on_failure_is_warned_about(
    tmp_path: Path, moto_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """maxReceiveCount 2 and maximum_retry_attempts 2: the queue moves the message to its DLQ
    after the second failed receive, and the destination, which would get it after the
    third, never receives anything (it was silent: two batch.failed lines, no file)."""
    async with sqs_client(moto_server) as c:
        dlq = await make_queue(c, "dlq")
        arn = await queue_arn(c, dlq)
        url = await make_queue(
            c,
            VisibilityTimeout="1",
            RedrivePolicy=json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 2}),
        )
        safe = await make_queue(
            c, RedrivePolicy=json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
        )
        await send_json(c, url, [{"id": "poison", "fail": "always"}])
        on_failure = {"type": "file", "path": "dlq.jsonl"}
        async with running_daemon(
            tmp_path, src(url, moto_server), maximum_retry_attempts=2, on_failure=on_failure
        ):
            await wait_until_async(lambda: _nonempty(c, dlq), 30, "the message in the DLQ")
        assert not (tmp_path / "dlq.jsonl").exists()
        [line] = [r for r in caplog.records if r.getMessage() == "sqs.redrive_before_on_failure"]
        assert line.levelno == logging.WARNING
        assert line.__dict__["max_receive_count"] == line.__dict__["maximum_retry_attempts"] == 2
        caplog.clear()
        async with running_daemon(
            tmp_path, src(safe, moto_server), maximum_retry_attempts=2, on_failure=on_failure
        ):
            pass
        assert "sqs.redrive_before_on_failure" not in caplog.messages


async def _nonempty(c: Any, url: str) -> bool:
    return await depth(c, url) > 0


async def test_poison_message_ends_in_the_sqs_destination_and_others_pass(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        dest = await make_queue(c, "dest")
        url = await make_queue(c, VisibilityTimeout="1")
        await send_json(c, url, [{"id": "poison", "fail": "always"}, {"id": "g1"}, {"id": "g2"}])
        async with running_daemon(
            tmp_path,
            src(url, moto_server),
            env={"REPORT": "1"},
            report_batch_item_failures=True,
            maximum_retry_attempts=1,
            on_failure={"type": "sqs", "queue_url": dest, "endpoint_url": moto_server},
        ):
            await wait_until_async(lambda: _empty(c, url), 30, "the source queue to empty")
        [message] = await drain(c, dest)
        record = json.loads(message["Body"])
        assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 2
        assert record["version"] == "1.0"
        # The message is deleted from its queue: the record is the only place it is kept
        # (it had the metadata only, and the poison message was nowhere any more).
        [sqs_record] = record["payload"]["Records"]
        assert json.loads(sqs_record["body"]) == {"id": "poison", "fail": "always"}
        got = ids(delivered(tmp_path / "calls.jsonl"))
        assert sorted(set(got)) == ["g1", "g2", "poison"] and got.count("poison") == 2


async def test_poison_message_ends_in_the_file_destination_with_its_payload(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, VisibilityTimeout="1")
        await send_json(c, url, [{"id": "poison", "fail": "always"}])
        async with running_daemon(
            tmp_path,
            src(url, moto_server),
            maximum_retry_attempts=0,
            on_failure={"type": "file", "path": "dlq.jsonl"},
        ):
            await wait_until_async(lambda: _empty(c, url), 20, "the source queue to empty")
        [record] = read_jsonl(tmp_path / "dlq.jsonl")
        [sqs_record] = record["payload"]["Records"]
        assert json.loads(sqs_record["body"]) == {"id": "poison", "fail": "always"}
        assert record["requestContext"]["approximateInvokeCount"] == 1


async def test_batches_over_6mb_are_cut_and_every_large_message_delivered(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c, MaximumMessageSize="1048576")
        pad = "x" * 900_000
        await send_json(c, url, [{"id": f"big{i}", "pad": pad} for i in range(8)])
        async with running_daemon(
            tmp_path, src(url, moto_server), batch_size=20, batching_window_s=2
        ):
            await wait_until_async(lambda: _empty(c, url), 30, "every message deleted")
        invocations = calls(tmp_path / "calls.jsonl")
        assert sorted(ids(delivered(tmp_path / "calls.jsonl"))) == [f"big{i}" for i in range(8)]
        assert len(invocations) >= 2
        assert all(len(json.dumps(i["event"])) <= 6 * 1024 * 1024 for i in invocations)


TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


async def test_aws_trace_header_is_in_the_record_and_is_the_functions_trace_id(
    tmp_path: Path, moto_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triggerd.trigger")
    async with sqs_client(moto_server) as c:
        url = await make_queue(c)
        await c.send_message(
            QueueUrl=url,
            MessageBody='{"id": "m1"}',
            MessageSystemAttributes={
                "AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}
            },
        )
        async with running_daemon(tmp_path, src(url, moto_server)):
            await wait_until(lambda: bool(calls(tmp_path / "calls.jsonl")), 60, "the call")
            await wait_until_async(lambda: _empty(c, url), 10, "the delete")
    [call] = calls(tmp_path / "calls.jsonl")
    [record] = call["event"]["Records"]
    assert record["attributes"]["AWSTraceHeader"] == TRACE
    assert call["trace"] == TRACE
    logged = [r for r in caplog.records if r.getMessage() == "batch.invoked"]
    assert [(getattr(r, "request_id", None), getattr(r, "trace_id", None)) for r in logged] == [
        (call["request_id"], TRACE)
    ]


async def test_a_message_without_trace_header_gets_a_fresh_trace_id(
    tmp_path: Path, moto_server: str
) -> None:
    async with sqs_client(moto_server) as c:
        url = await make_queue(c)
        await send_json(c, url, [{"id": "m1"}])
        async with running_daemon(tmp_path, src(url, moto_server)):
            await wait_until(lambda: bool(calls(tmp_path / "calls.jsonl")), 60, "the call")
    [call] = calls(tmp_path / "calls.jsonl")
    assert "AWSTraceHeader" not in call["event"]["Records"][0]["attributes"]
    assert re.fullmatch(
        r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", call["trace"]
    )


async def test_failed_messages_too_big_together_for_the_sqs_destination_are_each_kept(
    tmp_path: Path, moto_server: str
) -> None:
    """Three 100 KB messages reported failed in one partial batch response give up together:
    their record (one event of the three) is over the destination's 256 KiB. The messages are
    deleted from their queue once it is written, so each must be in the destination."""
    async with sqs_client(moto_server) as c:
        dest = await make_queue(c, "dest", MaximumMessageSize="262144")
        url = await make_queue(c, VisibilityTimeout="5")
        pad = "x" * 100_000
        bodies = [{"id": f"big{i}", "fail": "always", "pad": pad} for i in range(3)]
        await send_json(c, url, bodies)
        async with running_daemon(
            tmp_path,
            src(url, moto_server),
            env={"REPORT": "1"},
            report_batch_item_failures=True,
            batch_size=10,
            batching_window_s=2,
            maximum_retry_attempts=0,
            on_failure={"type": "sqs", "queue_url": dest, "endpoint_url": moto_server},
        ):
            await wait_until_async(lambda: _empty(c, url), 30, "the source queue to empty")
        kept = []
        for message in await drain(c, dest):
            record = json.loads(message["Body"])
            kept += [
                json.loads(r["body"])["id"] for r in record.get("payload", {}).get("Records", [])
            ]
        assert sorted(kept) == ["big0", "big1", "big2"]
