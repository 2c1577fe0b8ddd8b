"""SNS's pieces without a server: the Query protocol's form and XML, message attributes, filter
policies of both scopes, the signature's string to sign and host pinning, the [sns] config's
checks and the state store's sns_resources table."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.parsers import QueryParser

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.fanout.sns.message import Message, parse_attributes
from triggerd.fanout.sns.policy import compile_policy
from triggerd.fanout.sns.sample import sample_event
from triggerd.fanout.sns.wire import (
    SnsError,
    entries,
    error_document,
    members,
    parse_form,
    response_document,
)
from triggerd.functions.backends.local import plugin as local_plugin
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import ConfigError
from triggerd_sns_http.signature import default_hosts, string_to_sign, url_allowed

TOPIC = "arn:aws:sns:us-east-1:123456789012:t"


def _model() -> ServiceModel:
    return ServiceModel(Loader().load_service_model("sns", "service-2"), "sns")


def _parse(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    shape = _model().operation_model(operation).output_shape
    response = {"body": body, "headers": {}, "status_code": status}
    parsed: dict[str, Any] = QueryParser().parse(response, shape)
    return parsed


def message(body: str = "{}", **attrs: tuple[str, str]) -> Message:
    fields = {
        name: {
            "Value.DataType": t,
            ("Value.BinaryValue" if t == "Binary" else "Value.StringValue"): v,
        }
        for name, (t, v) in attrs.items()
    }
    return Message("id", TOPIC, body, None, parse_attributes(fields), 0.0)


# ---- the wire format ----


def test_form_lists_and_maps_are_read_as_the_query_protocol_numbers_them() -> None:
    form = parse_form(
        b"Action=PublishBatch&PublishBatchRequestEntries.member.2.Id=b"
        b"&PublishBatchRequestEntries.member.1.Id=a"
        b"&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name=k"
        b"&Attributes.entry.1.key=FifoTopic&Attributes.entry.1.value=true"
    )
    items = members(form, "PublishBatchRequestEntries")
    assert [i["Id"] for i in items] == ["a", "b"]
    assert entries(items[0], "MessageAttributes", key="Name") == {"k": {}}
    assert entries(form, "Attributes") == {"FifoTopic": {"value": "true"}}


@pytest.mark.parametrize(
    "body",
    [b"a=b&&c", b"\xff=1", b"&".join([b"a=b"] * 1001), b"X.member.0.Id=a"],
)
def test_malformed_forms_are_invalid_parameters(body: bytes) -> None:
    with pytest.raises(SnsError) as exc:
        form = parse_form(body)
        members(form, "X")
    assert exc.value.code == "InvalidParameter" and exc.value.status == 400


def test_a_gap_in_member_numbers_is_refused() -> None:
    with pytest.raises(SnsError):
        members(parse_form(b"X.member.1.Id=a&X.member.3.Id=c"), "X")


def test_responses_parse_with_botocores_own_model() -> None:
    doc = response_document(
        "PublishBatch",
        {
            "Successful": [{"Id": "a", "MessageId": "m1", "SequenceNumber": None}],
            "Failed": [
                {"Id": "b", "Code": "InvalidParameter", "Message": "<&>", "SenderFault": True}
            ],
        },
        "rid",
    )
    parsed = _parse("PublishBatch", doc)
    assert parsed["Successful"] == [{"Id": "a", "MessageId": "m1"}]
    assert parsed["Failed"] == [
        {"Id": "b", "Code": "InvalidParameter", "Message": "<&>", "SenderFault": True}
    ]
    attrs = _parse(
        "GetTopicAttributes",
        response_document("GetTopicAttributes", {"Attributes": ("entries", {"A": "1"})}, "r"),
    )
    assert attrs["Attributes"] == {"A": "1"}


def test_errors_are_the_xml_botocore_reads_codes_from() -> None:
    doc = error_document(SnsError("NotFound", "Topic does not exist", 404), "rid-1")
    root = ET.fromstring(doc)
    ns = {"s": "http://sns.amazonaws.com/doc/2010-03-31/"}
    assert root.findtext("s:Error/s:Code", namespaces=ns) == "NotFound"
    assert root.findtext("s:Error/s:Type", namespaces=ns) == "Sender"
    parsed = _parse("Publish", doc, 404)
    assert parsed["Error"]["Code"] == "NotFound"


# ---- attributes and filter policies ----


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ({"n": {"Value.DataType": "Number", "Value.StringValue": "abc"}}, "ParameterValueInvalid"),
        (
            {"n": {"Value.DataType": "Number", "Value.StringValue": "1e127"}},
            "ParameterValueInvalid",
        ),
        (
            {"n": {"Value.DataType": "Number", "Value.StringValue": "1" * 39}},
            "ParameterValueInvalid",
        ),
        (
            {"a": {"Value.DataType": "String.Array", "Value.StringValue": "[{}]"}},
            "ParameterValueInvalid",
        ),
        ({"b": {"Value.DataType": "Binary", "Value.BinaryValue": "!!"}}, "InvalidParameter"),
        ({"s": {"Value.DataType": "Text", "Value.StringValue": "x"}}, "InvalidParameter"),
        ({"aws.x": {"Value.DataType": "String", "Value.StringValue": "x"}}, "InvalidParameter"),
        ({"s": {"Value.DataType": "String", "Value.StringValue": ""}}, "InvalidParameter"),
        (
            {f"k{i}": {"Value.DataType": "String", "Value.StringValue": "v"} for i in range(11)},
            "InvalidParameter",
        ),
    ],
)
def test_bad_attributes_get_snss_error_codes(attrs: dict[str, Any], code: str) -> None:
    with pytest.raises(SnsError) as exc:
        parse_attributes(attrs)
    assert exc.value.code == code


def test_numbers_in_snss_range_are_accepted() -> None:
    for value in ("1733459000123", "1e126", "-1e-128", "0", "0.000001", "1" * 38):
        spec = {"Value.DataType": "Number", "Value.StringValue": value}
        assert parse_attributes({"n": spec})["n"].value == value


def test_attribute_scope_sees_numbers_arrays_and_no_binary() -> None:
    m = message(
        price=("Number", "12.5"),
        count=("Number.int", "3"),
        tags=("String.Array", '["a","b"]'),
        blob=("Binary", base64.b64encode(b"x").decode()),
        kind=("String", "Big"),
    )
    assert m.attribute_view() == {"price": 12.5, "count": 3, "tags": ["a", "b"], "kind": "Big"}
    policy = compile_policy(
        {
            "price": [{"numeric": [">=", 10, "<", 20]}],
            "tags": ["b"],
            "kind": [{"equals-ignore-case": "big"}],
            "blob": [{"exists": False}],
        },
        "MessageAttributes",
    )
    assert policy.matches(m)
    assert not compile_policy({"price": [{"numeric": ["<", 10]}]}, "MessageAttributes").matches(m)
    either = compile_policy(
        {"$or": [{"kind": ["x"]}, {"count": [{"numeric": ["=", 3]}]}]}, "MessageAttributes"
    )
    assert either.matches(m)


def test_body_scope_matches_json_objects_only() -> None:
    policy = compile_policy('{"order": {"state": [{"prefix": "ship"}]}}', "MessageBody")
    assert policy.matches(message('{"order": {"state": "shipped"}}'))
    assert not policy.matches(message('{"order": {"state": "new"}}'))
    assert not policy.matches(message("shipped"))
    assert not policy.matches(message('["shipped"]'))


@pytest.mark.parametrize(
    ("policy", "scope"),
    [
        ("{not json", "MessageAttributes"),
        ("[1]", "MessageAttributes"),
        ({"a": [{"numeric": [">", "x"]}]}, "MessageAttributes"),
        ({"a": ["x"]}, "Body"),
        ({k: ["x"] for k in "abcdef"}, "MessageAttributes"),  # SNS: 5 keys at most
        ({"a": list(range(11)), "b": list(range(14))}, "MessageAttributes"),  # 154 > 150
        ({"a": [1], "$or": [{"b": list(range(100))}, {"c": list(range(51))}]}, "MessageBody"),
        ({"a": [{"wildcard": "x*"}]}, "MessageAttributes"),  # EventBridge's, not SNS's
        ({"a": [{"anything-but": {"wildcard": "x*"}}]}, "MessageBody"),
        ({"a": {"b": ["x"]}}, "MessageAttributes"),  # nested: MessageBody only
        ({"$or": [{"a": ["x"]}, {"b": {"c": ["x"]}}]}, "MessageAttributes"),
    ],
)
def test_bad_policies_are_invalid_parameters(policy: Any, scope: str) -> None:
    with pytest.raises(SnsError) as exc:
        compile_policy(policy, scope)
    assert exc.value.code == "InvalidParameter"


def test_policies_at_snss_limits_are_accepted() -> None:
    compile_policy({k: ["x"] for k in "abcde"}, "MessageAttributes")
    compile_policy({"a": list(range(10)), "b": list(range(15))}, "MessageAttributes")
    compile_policy(
        {"a": [1], "$or": [{"b": list(range(100))}, {"c": list(range(50))}]}, "MessageBody"
    )


def test_sample_event_is_the_fan_out_shape() -> None:
    event = sample_event({"message": "hi", "attr.k": "Number:4", "topic": "orders"})
    sns = event["Records"][0]["Sns"]
    assert sns["Message"] == "hi" and sns["Subject"] is None
    assert sns["TopicArn"] == "arn:aws:sns:us-east-1:123456789012:orders"
    assert sns["MessageAttributes"] == {"k": {"Type": "Number", "Value": "4"}}
    with pytest.raises(ConfigError):
        sample_event({"bogus": "1"})


# ---- receiving real SNS ----


def test_string_to_sign_follows_awss_field_order() -> None:
    note = {
        "Type": "Notification",
        "MessageId": "i",
        "TopicArn": "t",
        "Message": "m",
        "Timestamp": "ts",
        "Subject": "s",
        "Other": "x",
    }
    assert string_to_sign(note) == (
        b"Message\nm\nMessageId\ni\nSubject\ns\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    )
    del note["Subject"]
    assert b"Subject" not in string_to_sign(note)
    confirm = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "i",
        "TopicArn": "t",
        "Message": "m",
        "Timestamp": "ts",
        "Token": "k",
        "SubscribeURL": "u",
    }
    assert string_to_sign(confirm) == (
        b"Message\nm\nMessageId\ni\nSubscribeURL\nu\nTimestamp\nts\nToken\nk\nTopicArn\nt\n"
        b"Type\nSubscriptionConfirmation\n"
    )


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://sns.us-east-1.amazonaws.com/Cert.pem", True),
        ("http://sns.us-east-1.amazonaws.com/Cert.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.test/Cert.pem", False),
        ("https://user@sns.us-east-1.amazonaws.com/Cert.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/Cert.pem", False),
        ("https://[::1/x", False),
    ],
)
def test_certificate_urls_are_https_on_a_pinned_host(url: str, ok: bool) -> None:
    assert url_allowed(url, ["sns.us-east-1.amazonaws.com"]) is ok


@pytest.mark.parametrize(
    ("region", "hosts"),
    [
        ("us-east-1", ["sns.us-east-1.amazonaws.com"]),
        ("us-gov-west-1", ["sns.us-gov-west-1.amazonaws.com"]),
        ("cn-north-1", ["sns.cn-north-1.amazonaws.com.cn"]),
        # Dots would reach other AWS hosts: sns.s3.amazonaws.com is the S3 bucket "sns".
        ("s3", []),
        ("s3.us-east-1", []),
        ("us-east-1.s3", []),
        ("", []),
    ],
)
def test_the_default_certificate_host_is_snss_own_for_a_real_region(
    region: str, hosts: list[str]
) -> None:
    assert default_hosts(f"arn:aws:sns:{region}:123456789012:t") == hosts


# ---- config and state ----


def _config(tmp: Path, sns: dict[str, Any]) -> Any:
    registry = Registry()
    registry.register("backend", "local", local_plugin)
    data = {
        "daemon": {
            "state": f"sqlite:///{tmp / 's.db'}",
            "listen": "",
            "control_listen": "127.0.0.1:0",
        },
        "functions": {"fn": {"handler": "app.handler", "code": str(tmp)}},
        "sns": sns,
    }
    return validate_data(data, registry, tmp)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _config(tmp_path, {"topics": [{"name": "t", "subscriptions": [{"function": "fnx"}]}]})
    assert "sns.topics.0.subscriptions.0.function: 'fnx' is not a function" in str(exc.value)
    assert "did you mean 'fn'" in str(exc.value)
    for bad, where in [
        ({"name": "t.fifo"}, "Fifo Topic names must end with .fifo"),
        ({"name": "bad name"}, "Topic names must be made up"),
        ({"name": "t", "subscriptions": [{"protocol": "sqs", "queue": "q"}]}, "sns.sqs_endpoints"),
        ({"name": "t", "subscriptions": [{"function": "fn", "filter_policy": "{x"}]}, "not JSON"),
        (
            {
                "name": "t",
                "subscriptions": [{"function": "fn", "filter_policy": {"a": {"b": [1]}}}],
            },
            "subscriptions.0: filter_policy: Filter policy scope MessageAttributes",
        ),
        (
            {"name": "t", "subscriptions": [{"function": "fn", "filter_policy": {"a": [1] * 151}}]},
            "too complex",
        ),
    ]:
        with pytest.raises(ConfigError) as exc:
            _config(tmp_path, {"topics": [bad]})
        assert where in str(exc.value), str(exc.value)
    cfg = _config(tmp_path, {"topics": [{"name": "t", "subscriptions": [{"function": "fn"}]}]})
    assert cfg.sns.topics[0].subscriptions[0].protocol == "lambda"


def test_signature_version_without_a_signing_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _config(tmp_path, {"signature_version": "2"})
    assert "sns: signature_version: only notifications signed with signing_key_file" in str(
        exc.value
    )
    assert _config(tmp_path, {}).sns.signature_version == "1"


async def test_sns_resources_are_kept_across_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SQLiteStateStore(path)
    await store.open()
    await store.sns_put("arn:t", "topic", b'{"a":1}')
    await store.sns_put("arn:t:s", "subscription", b"{}")
    await store.sns_put("arn:t", "topic", b'{"a":2}')
    await store.sns_delete("arn:t:s")
    await store.sns_delete("arn:none")
    await store.close()
    again = SQLiteStateStore(path)
    await again.open()
    assert await again.sns_list() == [("arn:t", "topic", b'{"a":2}')]
    await again.close()
    assert json.loads(b'{"a":2}') == {"a": 2}


def test_a_reload_reports_sns_changes_as_needing_a_restart(tmp_path: Path) -> None:
    from triggerd.daemon.changes import diff_configs

    old = _config(tmp_path, {"topics": [{"name": "t"}]})
    new = _config(tmp_path, {"topics": [{"name": "t"}, {"name": "u"}]})
    changes = diff_configs(old, new)
    assert "sns" in changes.needs_restart
    assert [t.name for t in changes.config.sns.topics] == ["t"]  # kept until the restart
    assert diff_configs(old, old).needs_restart == ()


class _FakeQueues:
    def queue_of(self, function: str) -> str | None:
        return f"invoke-api:{function}"

    def wake(self, function: str) -> None:
        return None


async def test_the_fifo_relay_releases_one_message_per_group_at_a_time(tmp_path: Path) -> None:
    from triggerd.fanout.sns.fifo import FifoRelay, held_payload, holding_queue
    from triggerd.state.base import NewEvent

    store = SQLiteStateStore(str(tmp_path / "s.db"))
    await store.open()
    held = [
        NewEvent(holding_queue("f"), "f", held_payload(key, f'{{"n":"{n}"}}'.encode()), n, t, t)
        for t, (key, n) in enumerate([("A", "a1"), ("B", "b1"), ("A", "a2"), ("A", "a3")], 1)
    ]
    await store.enqueue(held)
    relay = FifoRelay(["f"], state=store, queues=_FakeQueues(), clock=lambda: 100.0)

    async def invoke_queue() -> list[Any]:
        return await store.claim("invoke-api:f", 10, 30, 100.0)

    await relay._step("f")
    first = await invoke_queue()
    assert sorted(json.loads(e.payload)["n"] for e in first) == ["a1", "b1"]
    await relay._step("f")  # a1 still queued: a2 waits
    assert await invoke_queue() == []
    for event in first:  # both invoked
        await store.complete(event.id)
    await relay._step("f")
    second = await invoke_queue()
    assert [json.loads(e.payload)["n"] for e in second] == ["a2"]
    # A crash now (nothing given back): the next run finds a2 in flight and holds a3.
    await store.release(second[0].id, available_at=0, attempts=0)
    assert await store.recover_leases() >= 1
    again = FifoRelay(["f"], state=store, queues=_FakeQueues(), clock=lambda: 100.0)
    await again._recover()
    await again._step("f")
    assert [json.loads(e.payload)["n"] for e in await invoke_queue()] == ["a2"]
    assert await store.queue_depth(holding_queue("f")) == 2  # a2 (in flight) and a3
    await store.release(
        (await store.claim("invoke-api:f", 1, 30, 200.0))[0].id, available_at=0, attempts=0
    )
    await store.complete((await store.claim("invoke-api:f", 1, 30, 200.0))[0].id)
    await again._step("f")  # a2 done: a3 goes
    assert [json.loads(e.payload)["n"] for e in await invoke_queue()] == ["a3"]
    assert await store.queue_depth(holding_queue("f")) == 1
    await store.close()


# ---- the service against a live set of functions (reloads add and remove them) ----


class _LiveQueues:
    """Event queues of the functions in `running` only (the others are gone)."""

    def __init__(self, running: set[str]) -> None:
        self.running = running

    def queue_of(self, function: str) -> str | None:
        return f"invoke-api:{function}" if function in self.running else None

    def wake(self, function: str) -> None:
        return None


async def _service(
    tmp_path: Path,
    functions: dict[str, str],
    running: set[str],
    store: Any = None,
    sns: dict[str, Any] | None = None,
) -> Any:
    from triggerd.config.sns import SnsSettings
    from triggerd.fanout.sns.service import SnsService
    from triggerd.fanout.sns.sqs import SqsOutbox

    if store is None:
        store = SQLiteStateStore(str(tmp_path / "s.db"))
        await store.open()
    settings = SnsSettings.model_validate(sns or {})
    outbox = SqsOutbox(settings, region="us-east-1", account_id="123456789012", state=store)
    return SnsService(
        settings,
        region="us-east-1",
        account_id="123456789012",
        functions=functions,
        queues=_LiveQueues(running),
        state=store,
        outbox=outbox,
    )


def _fn_arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:123456789012:function:{name}"


async def test_functions_a_reload_adds_or_removes_are_seen_without_a_restart(
    tmp_path: Path,
) -> None:
    functions = {"a": _fn_arn("a")}
    running = {"a"}
    service = await _service(tmp_path, functions, running)
    topic = (await service.create_topic({"Name": "t"}))["TopicArn"]
    await service.subscribe({"TopicArn": topic, "Protocol": "lambda", "Endpoint": _fn_arn("a")})
    functions["b"] = _fn_arn("b")  # a reload adds b
    running.add("b")
    await service.subscribe({"TopicArn": topic, "Protocol": "lambda", "Endpoint": _fn_arn("b")})
    del functions["a"]  # and removes a: its subscription outlives it
    running.discard("a")
    answer = await service.publish({"TopicArn": topic, "Message": "hello"})
    assert answer["MessageId"]
    assert await service.state.queue_depth("invoke-api:b") == 1
    assert await service.state.queue_depth("invoke-api:a") == 0
    with pytest.raises(SnsError) as refused:
        await service.subscribe({"TopicArn": topic, "Protocol": "lambda", "Endpoint": _fn_arn("a")})
    assert refused.value.status == 400
    # After a restart the subscription is still there (listed, removable), and a reload that
    # brings the function back has it delivered to again.
    again = await _service(tmp_path, functions, running, service.state)
    await again.load()
    listed = await again.list_subscriptions_by_topic({"TopicArn": topic})
    assert sorted(s["Endpoint"] for s in listed["Subscriptions"]) == [_fn_arn("a"), _fn_arn("b")]
    functions["a"] = _fn_arn("a")
    running.add("a")
    await again.publish({"TopicArn": topic, "Message": "again"})
    assert await again.state.queue_depth("invoke-api:a") == 1
    await service.state.close()


async def test_a_fifo_batch_that_fails_partway_reports_what_was_stored(tmp_path: Path) -> None:
    from triggerd.state.sqlite import StateStoreError

    class Failing(SQLiteStateStore):
        calls = 0

        async def enqueue_unless_checkpoint(
            self, events: Any, scope: str, key: str, value: str
        ) -> bool:
            Failing.calls += 1
            if Failing.calls == 2:
                raise StateStoreError("disk full")
            return await super().enqueue_unless_checkpoint(events, scope, key, value)

    store = Failing(str(tmp_path / "s.db"))
    await store.open()
    service = await _service(tmp_path, {"f": _fn_arn("f")}, {"f"}, store)
    topic = (await service.create_topic({"Name": "t.fifo", **_attrs(FifoTopic="true")}))["TopicArn"]
    await service.subscribe({"TopicArn": topic, "Protocol": "lambda", "Endpoint": _fn_arn("f")})
    form = {"TopicArn": topic}
    for n in (1, 2, 3):
        p = f"PublishBatchRequestEntries.member.{n}"
        form |= {f"{p}.Id": f"e{n}", f"{p}.Message": f"m{n}", f"{p}.MessageGroupId": "g"}
        form[f"{p}.MessageDeduplicationId"] = f"d{n}"
    answer = await service.publish_batch(form)
    assert [s["Id"] for s in answer["Successful"]] == ["e1"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in answer["Failed"]] == [
        ("e2", "InternalError", False),
        ("e3", "InternalError", False),
    ]
    assert await store.queue_depth("sns-fifo:f") == 1
    await store.close()


def _attrs(**attrs: str) -> dict[str, str]:
    form: dict[str, str] = {}
    for n, (k, v) in enumerate(attrs.items(), 1):
        form[f"Attributes.entry.{n}.key"] = k
        form[f"Attributes.entry.{n}.value"] = v
    return form


async def test_the_fifo_relay_takes_up_a_function_a_reload_added(tmp_path: Path) -> None:
    from triggerd.fanout.sns.fifo import FifoRelay, held_payload, holding_queue
    from triggerd.state.base import NewEvent

    store = SQLiteStateStore(str(tmp_path / "s.db"))
    await store.open()
    relay = FifoRelay([], state=store, queues=_FakeQueues(), clock=lambda: 100.0)
    task = asyncio.create_task(relay.run())  # started without functions: still running
    await store.enqueue(
        [NewEvent(holding_queue("new"), "new", held_payload("G", b'{"n":1}'), "r1", 1.0, 1.0)]
    )
    relay.wake("new")
    for _ in range(100):
        if await store.queue_depth("invoke-api:new"):
            break
        await asyncio.sleep(0.02)
    assert await store.queue_depth("invoke-api:new") == 1
    relay.stop()
    await asyncio.wait_for(task, 5)
    await store.close()


# ---- notifications signed with the operator's key ----


def _key_and_cert(bits: int = 2048) -> tuple[bytes, bytes]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("version", ["1", "2"])
def test_notifications_signed_with_the_operators_key_verify_as_snss(version: str) -> None:
    from triggerd.fanout.sns.signing import Signer
    from triggerd_sns_http.signature import VerificationError, verify

    key, cert = _key_and_cert()
    signer = Signer(key, "https://certs.example/sns.pem", version)
    for subject in (None, "hello"):
        m = Message("id-1", TOPIC, "body", subject, {}, 1_700_000_000.5, signer=signer)
        sns = json.loads(m.lambda_event(region="us-east-1", subscription_arn=TOPIC + ":s"))
        sns = sns["Records"][0]["Sns"]
        assert sns["SignatureVersion"] == version
        assert sns["SigningCertUrl"] == "https://certs.example/sns.pem"
        verify(sns, cert)
        with pytest.raises(VerificationError):
            verify({**sns, "Message": "forged"}, cert)
    envelope = json.loads(m.sqs_envelope(region="us-east-1", subscription_arn=TOPIC + ":s"))
    verify(envelope, cert)


async def test_an_unusable_signing_key_is_a_config_error_naming_it(tmp_path: Path) -> None:
    from triggerd.config.sns import SnsSettings
    from triggerd.daemon.sns import _signer

    small, _ = _key_and_cert(1024)
    (tmp_path / "small.pem").write_bytes(small)
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    for name, reason in [("small.pem", "1024 bits"), ("junk.pem", "PEM"), ("none.pem", "read")]:
        settings = SnsSettings.model_validate(
            {
                "signing_key_file": str(tmp_path / name),
                "signing_cert_url": "https://certs.example/sns.pem",
            }
        )
        with pytest.raises(ConfigError) as refused:
            await _signer(settings)
        assert "sns.signing_key_file" in str(refused.value)
        assert reason in str(refused.value)
    with pytest.raises(ValueError, match="go together"):
        SnsSettings.model_validate({"signing_key_file": "k.pem"})


async def test_subscribing_again_with_other_attributes_is_refused_not_ignored(
    tmp_path: Path,
) -> None:
    service = await _service(tmp_path, {"f": _fn_arn("f")}, {"f"})
    topic = (await service.create_topic({"Name": "t"}))["TopicArn"]
    base = {"TopicArn": topic, "Protocol": "lambda", "Endpoint": _fn_arn("f")}
    big = _attrs(FilterPolicy='{"kind": ["big"]}')
    arn = (await service.subscribe({**base, **big}))["SubscriptionArn"]
    assert (await service.subscribe({**base, **big}))["SubscriptionArn"] == arn  # idempotent
    for other in (
        _attrs(FilterPolicy='{"kind": ["small"]}'),
        _attrs(FilterPolicy='{"kind": ["big"]}', FilterPolicyScope="MessageBody"),
        {},
    ):
        with pytest.raises(SnsError) as refused:
            await service.subscribe({**base, **other})
        assert refused.value.code == "InvalidParameter"
        assert "already exists with different attributes" in refused.value.message
    # The first policy still decides.
    small = "MessageAttributes.entry.1"
    await service.publish(
        {
            "TopicArn": topic,
            "Message": "m",
            f"{small}.Name": "kind",
            f"{small}.Value.DataType": "String",
            f"{small}.Value.StringValue": "small",
        }
    )
    assert await service.state.queue_depth("invoke-api:f") == 0
    await service.state.close()


def _queue(name: str, url: str, **extra: str) -> dict[str, Any]:
    return {"name": name, "queue_url": url, "endpoint_url": "http://127.0.0.1:1", **extra}


async def test_a_fifo_queue_cannot_subscribe_to_a_standard_topic(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/123456789012/q.fifo"
    service = await _service(tmp_path, {}, set(), sns={"sqs_endpoints": [_queue("q.fifo", url)]})
    queue = "arn:aws:sqs:us-east-1:123456789012:q.fifo"
    standard = (await service.create_topic({"Name": "t"}))["TopicArn"]
    with pytest.raises(SnsError) as refused:
        await service.subscribe({"TopicArn": standard, "Protocol": "sqs", "Endpoint": queue})
    assert refused.value.code == "InvalidParameter"
    assert "FIFO SQS Queues can not be subscribed to standard SNS topics" in str(refused.value)
    fifo = await service.create_topic({"Name": "t.fifo", **_attrs(FifoTopic="true")})
    sub = {"TopicArn": fifo["TopicArn"], "Protocol": "sqs", "Endpoint": queue}
    assert (await service.subscribe(sub))["SubscriptionArn"]
    await service.state.close()
    data = {
        "daemon": {"state": "sqlite:///x.db", "control_listen": "127.0.0.1:0"},
        "sns": {
            "topics": [{"name": "t", "subscriptions": [{"protocol": "sqs", "queue": "q.fifo"}]}],
            "sqs_endpoints": [_queue("q.fifo", url)],
        },
    }
    with pytest.raises(ConfigError) as bad:
        validate_data(data, Registry(), base_dir=tmp_path)
    assert "topics.0.subscriptions.0.queue: FIFO SQS Queues can not" in str(bad.value)


async def test_a_queue_arn_names_the_account_of_its_url(tmp_path: Path) -> None:
    from triggerd.config.sns import SqsEndpoint

    def arn(url: str, **extra: str) -> str:
        return SqsEndpoint.model_validate(_queue("q", url, **extra)).arn("eu-west-1", "1" * 12)

    assert arn("http://localhost:4566/000000000000/q") == "arn:aws:sqs:eu-west-1:000000000000:q"
    assert arn("https://sqs.eu-west-1.amazonaws.com/222233334444/q") == (
        "arn:aws:sqs:eu-west-1:222233334444:q"
    )
    assert arn(
        "http://localhost/000000000000/q", account_id="555566667777", region="us-west-2"
    ) == ("arn:aws:sqs:us-west-2:555566667777:q")
    assert arn("http://localhost/q") == "arn:aws:sqs:eu-west-1:111111111111:q"
    # Subscribe takes the ARN the queue's own SQS reports.
    sns = {"sqs_endpoints": [_queue("q", "http://localhost:4566/000000000000/q")]}
    service = await _service(tmp_path, {}, set(), sns=sns)
    topic = (await service.create_topic({"Name": "t"}))["TopicArn"]
    sub = {"TopicArn": topic, "Protocol": "sqs", "Endpoint": "arn:aws:sqs:us-east-1:000000000000:q"}
    assert (await service.subscribe(sub))["SubscriptionArn"]
    await service.state.close()


async def test_a_topics_display_name_is_kept(tmp_path: Path) -> None:
    service = await _service(tmp_path, {}, set())
    form = {"Name": "t", **_attrs(DisplayName="Orders")}
    topic = (await service.create_topic(form))["TopicArn"]
    attrs = (await service.get_topic_attributes({"TopicArn": topic}))["Attributes"][1]
    assert attrs["DisplayName"] == "Orders"
    again = await _service(tmp_path, {}, set(), service.state)
    await again.load()
    attrs = (await again.get_topic_attributes({"TopicArn": topic}))["Attributes"][1]
    assert attrs["DisplayName"] == "Orders"
    await service.state.close()


class _GatedStore(SQLiteStateStore):
    """Counts claims per queue, and can hold one queue's next claim after its query ran."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.claims: dict[str, int] = {}
        self.hold: str | None = None
        self.held = asyncio.Event()
        self.gate = asyncio.Event()

    async def claim(self, trigger: str, limit: int, lease_s: float, now: float) -> Any:
        found = await super().claim(trigger, limit, lease_s, now)
        self.claims[trigger] = self.claims.get(trigger, 0) + 1
        if trigger == self.hold:
            self.hold = None
            self.held.set()
            await self.gate.wait()
        return found


async def test_one_sqs_sender_does_not_swallow_a_wake_up_meant_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triggerd.config.sns import SnsSettings
    from triggerd.fanout.sns import sqs as sqs_module
    from triggerd.fanout.sns.sqs import SqsOutbox, outbox_name
    from triggerd.state.base import NewEvent

    # Only a wake-up gets an idle sender going (no poll would rescue a lost one).
    monkeypatch.setattr(sqs_module, "_POLL_S", 3600.0)
    store = _GatedStore(str(tmp_path / "s.db"))
    await store.open()
    urls = {n: f"http://127.0.0.1:1/123456789012/{n}" for n in ("a", "b")}
    settings = SnsSettings.model_validate(
        {"sqs_endpoints": [_queue(n, u) for n, u in urls.items()]}
    )
    outbox = SqsOutbox(settings, region="us-east-1", account_id="123456789012", state=store)
    sent: list[str] = []

    class Client:
        async def send_message(self, **kwargs: Any) -> dict[str, Any]:
            sent.append(kwargs["MessageBody"])
            return {}

    # b's first claim finds nothing and is held there, as if its query ran just before a
    # publish committed.
    store.hold = outbox_name("b")
    async with asyncio.TaskGroup() as tg:
        for endpoint in settings.sqs_endpoints:
            tg.create_task(outbox._sender(endpoint, Client()))
        await store.held.wait()
        doc = {"body": "for-b", "attributes": {}, "group": None, "dedup": None}
        await store.enqueue(
            [NewEvent(outbox_name("b"), "", json.dumps(doc).encode(), "r1", 1.0, 1.0)]
        )
        outbox.wake()
        # a wakes, clears and looks again (its clear comes before its claim) ...
        async with asyncio.timeout(10):
            while store.claims.get(outbox_name("a"), 0) < 2:
                await asyncio.sleep(0.01)
        # ... and only then does b's empty claim return: b must still see the wake-up.
        store.gate.set()
        try:
            async with asyncio.timeout(10):
                while not sent:
                    await asyncio.sleep(0.01)
        finally:
            outbox.stop()
    assert sent == ["for-b"]
    await store.close()


async def test_true_false_attributes_refuse_other_values_instead_of_reading_false(
    tmp_path: Path,
) -> None:
    service = await _service(tmp_path, {"f": _fn_arn("f")}, {"f"})
    for attrs in (_attrs(FifoTopic="yes"), _attrs(ContentBasedDeduplication="1")):
        with pytest.raises(SnsError) as refused:
            await service.create_topic({"Name": "t.fifo", **attrs})
        assert refused.value.code == "InvalidParameter"
        assert "Must be true or false" in refused.value.message
    # Case does not matter, as in SNS.
    fifo = (await service.create_topic({"Name": "t.fifo", **_attrs(FifoTopic="TRUE")}))["TopicArn"]
    assert fifo.endswith(":t.fifo")
    topic = (await service.create_topic({"Name": "t"}))["TopicArn"]
    base = {"TopicArn": topic, "Protocol": "lambda", "Endpoint": _fn_arn("f")}
    with pytest.raises(SnsError) as refused:
        await service.subscribe({**base, **_attrs(RawMessageDelivery="ture")})
    assert "RawMessageDelivery: Invalid value [ture]" in refused.value.message
    await service.state.close()


async def test_topic_tags_are_refused_not_silently_dropped(tmp_path: Path) -> None:
    service = await _service(tmp_path, {}, set())
    form = {"Name": "t", "Tags.member.1.Key": "team", "Tags.member.1.Value": "a"}
    with pytest.raises(SnsError) as refused:
        await service.create_topic(form)
    assert refused.value.code == "InvalidParameter"
    assert "tags are not supported" in refused.value.message
    assert (await service.list_topics({}))["Topics"] == []
    await service.state.close()


async def test_list_subscriptions_pages_across_topics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("triggerd.fanout.sns.service.LIST_PAGE", 2)
    service = await _service(tmp_path, {"f": _fn_arn("f")}, {"f"})
    made = set()
    for name in ("a", "b", "c"):
        topic = (await service.create_topic({"Name": name}))["TopicArn"]
        form = {"TopicArn": topic, "Protocol": "lambda", "Endpoint": _fn_arn("f")}
        made.add((await service.subscribe(form))["SubscriptionArn"])
    first = await service.list_subscriptions({})
    assert len(first["Subscriptions"]) == 2 and first["NextToken"]
    second = await service.list_subscriptions({"NextToken": first["NextToken"]})
    assert len(second["Subscriptions"]) == 1 and second["NextToken"] is None
    listed = [s["SubscriptionArn"] for p in (first, second) for s in p["Subscriptions"]]
    assert set(listed) == made and len(listed) == 3
    await service.state.close()


async def test_an_action_not_served_is_invalid_action(tmp_path: Path) -> None:
    service = await _service(tmp_path, {}, set())
    with pytest.raises(SnsError) as refused:
        await service.call("DeleteTopic", {"TopicArn": "arn:aws:sns:us-east-1:1:t"})
    assert (refused.value.code, refused.value.status) == ("InvalidAction", 400)
    await service.state.close()
