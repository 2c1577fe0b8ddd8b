"""The Amazon MQ for RabbitMQ event shape, built from pamqp properties without a broker."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest
from pamqp.commands import Basic

from triggerd_rabbitmq.shape import (
    basic_properties,
    envelope,
    java_date,
    java_value,
    message_entry,
    queue_key,
    sample_event,
    synthesised_broker_arn,
)

KEYS = [
    "contentType",
    "contentEncoding",
    "headers",
    "deliveryMode",
    "priority",
    "correlationId",
    "replyTo",
    "expiration",
    "messageId",
    "timestamp",
    "type",
    "userId",
    "appId",
    "clusterId",
    "bodySize",
]


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC), "Jan 1, 1970, 12:33:41 AM"),
        (datetime(2024, 12, 31, 12, 0, 5, tzinfo=UTC), "Dec 31, 2024, 12:00:05 PM"),
        (datetime(2024, 5, 9, 23, 59, 59, tzinfo=UTC), "May 9, 2024, 11:59:59 PM"),
        (datetime(2024, 5, 9, 1, 2, 3), "May 9, 2024, 1:02:03 AM"),  # naive = UTC
        (
            datetime(2024, 5, 9, 3, 0, 0, tzinfo=timezone(timedelta(hours=2))),
            "May 9, 2024, 1:00:00 AM",
        ),
    ],
)
def test_java_date_is_the_medium_format_in_utc(moment: datetime, text: str) -> None:
    assert java_date(moment) == text


def test_every_property_key_is_present_and_null_when_unset() -> None:
    props = basic_properties(Basic.Properties(), 0)
    assert list(props) == KEYS
    assert props == dict.fromkeys(KEYS[:-1]) | {"bodySize": 0}


def test_properties_keep_amqp_values_and_expiration_stays_a_string() -> None:
    props = SimpleNamespace(  # pamqp refuses a cluster_id; other clients may still send one
        content_type="text/plain",
        delivery_mode=2,
        priority=34,
        expiration="60000",
        message_id="m",
        timestamp=datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC),
        message_type="t",
        user_id="u",
        app_id="a",
        cluster_id="c",
        headers=None,
        content_encoding=None,
        correlation_id=None,
        reply_to=None,
    )
    out = basic_properties(props, 80)
    assert out["contentType"] == "text/plain"
    assert out["deliveryMode"] == 2 and out["priority"] == 34
    assert out["expiration"] == "60000"
    assert out["timestamp"] == "Jan 1, 1970, 12:33:41 AM"
    assert (out["type"], out["userId"], out["appId"], out["clusterId"]) == ("t", "u", "a", "c")
    assert out["bodySize"] == 80


def test_headers_strings_become_java_byte_arrays_and_numbers_stay_numbers() -> None:
    headers = {
        "header1": "value1",
        "numberInHeader": 10,
        "flag": False,
        "ratio": 0.25,
        "dec": Decimal("1.50"),
        "whole": Decimal("3"),
        "raw": bytearray(b"\x01\xff"),
        "latin": b"\xe9",
        "when": datetime(1970, 1, 1, tzinfo=UTC),
        "nested": {"k": "v", "list": ["a", 1]},
        "none": None,
    }
    assert java_value(headers) == {
        "header1": {"bytes": [118, 97, 108, 117, 101, 49]},
        "numberInHeader": 10,
        "flag": False,
        "ratio": 0.25,
        "dec": 1.5,
        "whole": 3,
        "raw": [1, -1],
        "latin": {"bytes": [-23]},
        "when": "Jan 1, 1970, 12:00:00 AM",
        "nested": {"k": {"bytes": [118]}, "list": [{"bytes": [97]}, 1]},
        "none": None,
    }


def test_non_ascii_string_headers_are_utf8_as_signed_bytes() -> None:
    assert java_value("é€") == {"bytes": [-61, -87, -30, -126, -84]}


def test_message_entry_has_base64_data_redelivered_and_body_size() -> None:
    body = b'{"timeout":0,"data":"CZrmf0Gw8Ov4bqLQxD4E"}'
    entry = message_entry(Basic.Properties(content_type="application/json"), body, True)
    assert list(entry) == ["basicProperties", "redelivered", "data"]
    assert entry["redelivered"] is True
    assert base64.b64decode(entry["data"]) == body
    assert entry["basicProperties"]["bodySize"] == len(body)


def test_envelope_groups_messages_under_queue_and_vhost() -> None:
    event = envelope("arn:aws:mq:r:1:broker:b:b-1", queue_key("orders", "/"), [{"a": 1}])
    assert event == {
        "eventSource": "aws:rmq",
        "eventSourceArn": "arn:aws:mq:r:1:broker:b:b-1",
        "rmqMessagesByQueue": {"orders::/": [{"a": 1}]},
    }
    assert queue_key("q", "prod") == "q::prod"


def test_synthesised_broker_arn_is_stable_per_host_and_port() -> None:
    a = synthesised_broker_arn("eu-west-1", "111122223333", "mq.local", 5672)
    assert a == synthesised_broker_arn("eu-west-1", "111122223333", "mq.local", 5672)
    assert a != synthesised_broker_arn("eu-west-1", "111122223333", "mq.local", 5673)
    prefix, broker_id = a.rsplit(":b-", 1)
    assert prefix == "arn:aws:mq:eu-west-1:111122223333:broker:mq.local"
    assert len(broker_id) == 36


def test_sample_event_matches_the_documented_example() -> None:
    event = sample_event({"queue": "orders"})
    [msg] = event["rmqMessagesByQueue"]["orders::/"]
    props = msg["basicProperties"]
    assert props["headers"] == {"header1": {"bytes": list(b"value1")}, "numberInHeader": 10}
    assert props["timestamp"] == "Jan 1, 1970, 12:33:41 AM"
    assert props["bodySize"] == 43
    assert msg["data"] == "eyJ0aW1lb3V0IjowLCJkYXRhIjoiQ1pybWYwR3c4T3Y0YnFMUXhENEUifQ=="


def test_sample_event_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        sample_event({"queeu": "x"})
    with pytest.raises(ValueError, match="port must be a number"):
        sample_event({"port": "x"})
