"""S3 notification records, key encoding and sequencers (triggerd/events/s3.py)."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

import pytest

from triggerd.events.s3 import (
    SEQUENCER_WIDTH,
    Sequencer,
    encode_s3_key,
    new_host_id,
    new_request_id,
    s3_event_record,
    sample_s3_event,
)


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("plain.txt", "plain.txt"),
        ("a b/c+d.txt", "a+b/c%2Bd.txt"),
        ("uploads/red flower.jpg", "uploads/red+flower.jpg"),
        ("100%.csv", "100%25.csv"),
        ("q?a=1&b=2", "q%3Fa%3D1%26b%3D2"),
        ("dir/sub/file", "dir/sub/file"),
        ("café.txt", "caf%C3%A9.txt"),
        ("日本.txt", "%E6%97%A5%E6%9C%AC.txt"),
        ("a~b", "a%7Eb"),
        ("keep-_.*", "keep-_.*"),
        ("#hash,comma;semi:colon@at", "%23hash%2Ccomma%3Bsemi%3Acolon%40at"),
        ("(paren)[brack]{brace}", "%28paren%29%5Bbrack%5D%7Bbrace%7D"),
        ("quote\"'", "quote%22%27"),
        ("tab\tnl\n", "tab%09nl%0A"),
        ("emoji😀", "emoji%F0%9F%98%80"),
    ],
)
def test_encode_s3_key_form_encodes_like_s3(raw: str, encoded: str) -> None:
    assert encode_s3_key(raw) == encoded


@pytest.mark.parametrize("raw", ["a b+c", "x%2By", "ü/ö ä", "a~b*c", "  lead", "q?=&"])
def test_encoded_key_round_trips_through_unquote_plus(raw: str) -> None:
    assert unquote_plus(encode_s3_key(raw)) == raw


def test_encoded_key_uses_upper_case_hex() -> None:
    assert re.findall(r"%[0-9a-fA-F]{2}", encode_s3_key("é~?")) == ["%C3", "%A9", "%7E", "%3F"]


def _put(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "event_name": "ObjectCreated:Put",
        "bucket": "my-bucket",
        "key": "uploads/red flower.jpg",
        "size": 1024,
        "etag": "d41d8cd98f00b204e9800998ecf8427e",
        "sequencer": "0055aed6dcd90281e5",
        "event_time": 1714564800.123,
        "region": "eu-west-1",
        "configuration_id": "cfg",
        "request_id": "C3D13FE58DE4C810",
        "host_id": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
    }
    args.update(overrides)
    return s3_event_record(**args)  # type: ignore[arg-type]


def test_put_record_has_exactly_the_s3_shape() -> None:
    assert _put() == {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "eu-west-1",
        "eventTime": "2024-05-01T12:00:00.123Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "triggerd"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "cfg",
            "bucket": {
                "name": "my-bucket",
                "ownerIdentity": {"principalId": "triggerd"},
                "arn": "arn:aws:s3:::my-bucket",
            },
            "object": {
                "key": "uploads/red+flower.jpg",
                "size": 1024,
                "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                "sequencer": "0055AED6DCD90281E5",
            },
        },
    }


@pytest.mark.parametrize(
    "event_name", ["ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated"]
)
def test_removed_records_have_no_size_or_etag(event_name: str) -> None:
    obj = _put(event_name=event_name)["s3"]["object"]  # type: ignore[index]
    assert obj == {"key": "uploads/red+flower.jpg", "sequencer": "0055AED6DCD90281E5"}


def test_version_id_only_when_given_and_owner_and_principal_overridable() -> None:
    assert "versionId" not in _put()["s3"]["object"]  # type: ignore[index]
    record = _put(version_id="v1", owner_id="A3NL1KOZZKEXAMPLE", principal_id="AWS:AIDA1")
    assert record["s3"]["object"]["versionId"] == "v1"  # type: ignore[index]
    assert record["s3"]["bucket"]["ownerIdentity"] == {"principalId": "A3NL1KOZZKEXAMPLE"}  # type: ignore[index]
    assert record["userIdentity"] == {"principalId": "AWS:AIDA1"}


def test_request_and_host_ids_look_like_s3s() -> None:
    assert re.fullmatch(r"[0-9A-F]{16}", new_request_id())
    assert re.fullmatch(r"[A-Za-z0-9+/]{64}", new_host_id())


def test_sequencer_is_fixed_width_upper_hex_and_strictly_increasing_on_a_stuck_clock() -> None:
    seq = Sequencer(lambda: 1000.0)
    values = [seq.next() for _ in range(1000)]
    assert all(re.fullmatch(rf"[0-9A-F]{{{SEQUENCER_WIDTH}}}", v) for v in values)
    assert values == sorted(values) and len(set(values)) == len(values)


def test_sequencer_seeded_with_last_value_stays_increasing_when_clock_goes_back() -> None:
    first = Sequencer(lambda: 2000.0)
    last = first.next()
    restarted = Sequencer(lambda: 1000.0, last=last)
    assert restarted.next() > last
    assert restarted.last is not None and restarted.last > last


def test_sequencer_follows_the_clock_when_it_moves_ahead() -> None:
    now = [1000.0]
    seq = Sequencer(lambda: now[0])
    a = seq.next()
    now[0] = 1001.0
    b = seq.next()
    assert int(b, 16) - int(a, 16) == 1_000_000


def test_sample_event_defaults_and_options() -> None:
    put = sample_s3_event({})["Records"][0]
    assert put["eventName"] == "ObjectCreated:Put"
    assert put["s3"]["object"]["key"] == "uploads/example+file.txt"
    deleted = sample_s3_event({"bucket": "b-1", "key": "a b", "event": "deleted"})["Records"]
    assert deleted[0]["eventName"] == "ObjectRemoved:Delete"
    assert deleted[0]["s3"]["bucket"]["arn"] == "arn:aws:s3:::b-1"
    assert deleted[0]["s3"]["object"] == {"key": "a+b", "sequencer": "0055AED6DCD90281E5"}


@pytest.mark.parametrize(
    "options",
    [{"colour": "red"}, {"event": "renamed"}, {"bucket": "Not_Valid"}, {"size": "big"}],
)
def test_sample_event_rejects_unknown_options_and_bad_values(options: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        sample_s3_event(options)


def test_sample_event_accepts_full_event_names() -> None:
    record = sample_s3_event({"event": "ObjectRemoved:DeleteMarkerCreated"})["Records"][0]
    assert record["eventName"] == "ObjectRemoved:DeleteMarkerCreated"
    assert "size" not in record["s3"]["object"]
