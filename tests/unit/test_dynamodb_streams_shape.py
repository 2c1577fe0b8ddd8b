"""DynamoDB Streams records in Lambda's shape (LAMBDA_SEMANTICS.md §1.5), compared with the
golden file; binary attributes base64; view types; config checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from triggerd_dynamodb_streams.config import DynamoDBStreamsSourceConfig
from triggerd_dynamodb_streams.shape import Shaper, sample_event

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_sample_event_matches_the_golden_file() -> None:
    expected = json.loads((GOLDEN / "dynamodb_stream_event.json").read_text())
    got = sample_event({})
    assert got == expected
    assert list(got["Records"][0]) == list(expected["Records"][0])
    assert list(got["Records"][0]["dynamodb"]) == list(expected["Records"][0]["dynamodb"])


def test_images_follow_the_view_type_and_event_name() -> None:
    insert = sample_event({"event_name": "INSERT"})["Records"][0]["dynamodb"]
    remove = sample_event({"event_name": "REMOVE"})["Records"][0]["dynamodb"]
    keys = sample_event({"view": "KEYS_ONLY"})["Records"][0]["dynamodb"]
    assert "NewImage" in insert and "OldImage" not in insert
    assert "OldImage" in remove and "NewImage" not in remove
    assert "NewImage" not in keys and "OldImage" not in keys and keys["Keys"]


def test_botocore_values_become_lambdas_json() -> None:
    raw = {
        "eventID": "1",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2024, 5, 1, 0, 0, 7, 500000, tzinfo=UTC),
            "Keys": {"pk": {"B": b"\x00\x01"}},
            "NewImage": {"pk": {"B": b"\x00\x01"}, "tags": {"BS": [b"\x02"]}},
            "SequenceNumber": "300",
            "SizeBytes": 12,
            "StreamViewType": "NEW_IMAGE",
        },
    }
    record = Shaper("arn:stream").record(raw, "shardId-1")
    ddb = record.payload["dynamodb"]
    assert ddb["ApproximateCreationDateTime"] == 1714521607
    assert ddb["Keys"] == {"pk": {"B": "AAE="}}
    assert ddb["NewImage"]["tags"] == {"BS": ["Ag=="]}
    assert record.item_id == "300"
    assert record.payload["eventSourceARN"] == "arn:stream"


def test_config_takes_a_table_name_or_a_stream_arn_and_no_at_timestamp() -> None:
    arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
    by_arn = DynamoDBStreamsSourceConfig(type="dynamodb_streams", stream=arn)
    assert by_arn.table_name == "orders" and by_arn.region_or("x") == "eu-west-1"
    assert DynamoDBStreamsSourceConfig(type="dynamodb_streams", stream="orders").stream_arn is None
    with pytest.raises(ValidationError, match="TRIM_HORIZON and LATEST only"):
        DynamoDBStreamsSourceConfig(
            type="dynamodb_streams",
            stream="orders",
            starting_position="AT_TIMESTAMP",
            starting_position_timestamp=1.0,
        )
