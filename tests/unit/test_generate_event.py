"""`triggerd generate-event`: every source type has a sample and declares its options,
`SOURCE --help` lists them, unknown ones are refused (exit 2), and each sample has the shape
the source itself builds: the same keys with the same JSON types, all the way down, as an
event built by the source's own shape code from what its system hands over (golden files of
the shape code, or the shape functions called here as the source calls them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from click.testing import CliRunner
from pamqp.commands import Basic

from triggerd.cli.main import main
from triggerd.config.plugins import Registry

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def shape(value: Any) -> Any:
    """The value's keys and JSON types (a list: its first element's)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def golden(name: str) -> Callable[[], Any]:
    return lambda: json.loads((GOLDEN / name).read_text())


def sqs_reference() -> Any:
    from triggerd_sqs.shape import lambda_record

    message = {  # a ReceiveMessage entry as SQS returns it (AttributeNames=All)
        "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "Body": '{"hello": "world"}',
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
    }
    arn = "arn:aws:sqs:us-east-1:123456789012:my-queue"
    return {"Records": [lambda_record(message, arn, "us-east-1")]}


def rabbitmq_reference() -> Any:
    from triggerd_rabbitmq.shape import envelope, message_entry, synthesised_broker_arn

    props = Basic.Properties(  # what aio-pika hands the source
        content_type="application/json",
        headers={"header1": "value1", "numberInHeader": 10},
        delivery_mode=1,
        priority=34,
        expiration="60000",
        timestamp=datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC),
        user_id="AIDACKCEVSQ6C2EXAMPLE",
    )
    entry = message_entry(props, b'{"a":1}', redelivered=False)
    arn = synthesised_broker_arn("us-east-1", "123456789012", "localhost", 5672)
    return envelope(arn, "test::/", [entry])


def webhook_reference() -> Any:
    from triggerd_webhook.events import RequestMeta, RouteInfo, api_id, build_event
    from triggerd_webhook.source import describe_request

    request = make_mocked_request(
        "POST",
        "/orders/42",
        headers={
            "Host": "api.example.com",
            "User-Agent": "curl/8.0",
            "Content-Type": "application/json",
        },
    )
    req = describe_request(request)
    req.body = b'{"qty":1}'
    route = RouteInfo(
        method="POST",
        template="/orders/{id}",
        params={"id": "42"},
        stage="$default",
        api_id=api_id("trigger"),
    )
    meta = RequestMeta(
        request_id="JKJaXmPLvHcESHA=",
        time_s=1583348638.390,
        extended_request_id="KxKXzGbCIAMFuJg=",
        trace_id="Root=1-5e6a8d5e-0123456789abcdef01234567",
    )
    return build_event("2.0", req, route, meta)


def sns_http_reference() -> Any:
    """What the sns_http source builds from a real SNS HTTP notification (no Subject, no
    attributes: the sample's defaults)."""
    from triggerd_sns_http.source import lambda_event

    topic = "arn:aws:sns:us-east-1:123456789012:sns-lambda"
    message = {
        "Type": "Notification",
        "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        "TopicArn": topic,
        "Message": "Hello from SNS!",
        "Timestamp": "2019-01-02T12:45:07.000Z",
        "SignatureVersion": "1",
        "Signature": "tcc6faL2yUC6dgZdmrwh1Y4cGa/ebXEkAi6RibDsvpi+tE/1+82j...65r==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    return lambda_event(message, f"{topic}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55")


REFERENCES: dict[str, Callable[[], Any]] = {
    "directory": golden("s3_object_created_put.json"),
    "s3": golden("s3_object_created_put.json"),
    "schedule": golden("eventbridge_scheduled_event.json"),
    "kafka": golden("kafka_self_managed_event.json"),
    "kinesis": golden("kinesis_event.json"),
    "dynamodb_streams": golden("dynamodb_stream_event.json"),
    "postgres": golden("postgres_dynamodb_stream_event.json"),
    "sqs": sqs_reference,
    "rabbitmq": rabbitmq_reference,
    "webhook": webhook_reference,
    "sns_http": sns_http_reference,
}
SOURCES = Registry.discover().names("source")


def generate(*args: str) -> Any:
    result = CliRunner().invoke(main, ["generate-event", *args])
    return result


def test_every_source_type_is_covered() -> None:
    assert sorted(REFERENCES) == SOURCES


@pytest.mark.parametrize("source", SOURCES)
def test_sample_has_the_shape_the_source_builds(source: str) -> None:
    result = generate(source)
    assert result.exit_code == 0, result.output
    assert shape(json.loads(result.output)) == shape(REFERENCES[source]())


@pytest.mark.parametrize("source", SOURCES)
def test_help_lists_the_source_options(source: str) -> None:
    options = Registry.discover().source(source).sample_options
    assert options, f"{source} declares no sample options"
    result = generate(source, "--help")
    assert result.exit_code == 0, result.output
    for name, text in options.items():
        assert f"  {name} " in result.output
        assert text in result.output


@pytest.mark.parametrize("source", SOURCES)
def test_every_declared_option_is_accepted(source: str) -> None:
    """Each declared option reaches the sample (a value of its own kind is accepted)."""
    values = {
        "event": "deleted" if source in ("directory", "s3") else "MODIFY",
        "event_name": "REMOVE",
        "size": "7",
        "partition": "3",
        "offset": "9",
        "timestamp": "1700000000",
        "port": "5673",
        "time": "2024-06-01T00:00:00Z",
        "source": "aws.scheduler",
        "format": "1.0",
        "path": "/orders/7",
        "template": "/orders/{id}",
        "view": "NEW_IMAGE",
        "bucket": "my-bucket",
        "headers": "a:b",
        "table": "public.items" if source == "postgres" else "items",
        "method": "PUT",
    }
    options = Registry.discover().source(source).sample_options
    args = [f"--set={name}={values.get(name, 'x1')}" for name in options]
    result = generate(source, *args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("source", SOURCES)
def test_unknown_option_is_refused_with_the_known_ones(source: str) -> None:
    result = generate(source, "--set", "nope=1")
    assert result.exit_code == 2
    known = Registry.discover().source(source).sample_options
    assert "unknown option(s) for" in result.output and "nope" in result.output
    assert ", ".join(known) in result.output


def test_options_change_the_sample() -> None:
    result = generate("sqs", "-s", "body=hi", "-s", "group=g1")
    record = json.loads(result.output)["Records"][0]
    assert record["body"] == "hi"
    assert record["attributes"]["MessageGroupId"] == "g1"


def test_no_source_lists_the_sources() -> None:
    result = generate("--help")
    assert result.exit_code == 0
    # The source plugins, AWS's name of one (dynamodb) and the services triggerd serves
    # itself (eventbridge, sns).
    names = sorted({*SOURCES, "dynamodb", "eventbridge", "sns"})
    assert "Sources: " + ", ".join(names) in result.output


def test_the_test_harness_samples_what_generate_event_does() -> None:
    from triggerd.testing.harness import sample_event

    registry = Registry.discover()
    bus = sample_event(registry, "eventbridge", {"source": "com.example.test"})
    assert bus["source"] == "com.example.test" and bus["version"] == "0"
    sns = sample_event(registry, "sns", {"attr.color": "red"})
    assert sns["Records"][0]["Sns"]["MessageAttributes"]["color"]["Value"] == "red"
    with pytest.raises(ValueError, match=r"unknown option.*nope"):
        sample_event(registry, "sqs", {"nope": "1"})


def test_kinesis_sample_values_are_the_sources() -> None:
    result = generate("kinesis", "--set", "account=111122223333")
    (record,) = json.loads(result.output)["Records"]
    assert record["invokeIdentityArn"] == "arn:aws:iam::111122223333:role/triggerd"
    bad = generate("kinesis", "--set", "timestamp=soon")
    assert bad.exit_code == 2 and "timestamp 'soon' is not epoch seconds" in bad.output


def test_dynamodb_is_the_dynamodb_streams_sample_as_aws_names_it() -> None:
    alias = generate("dynamodb", "--set", "event_name=INSERT", "--set", "table=items")
    source = generate("dynamodb_streams", "--set", "event_name=INSERT", "--set", "table=items")
    assert alias.exit_code == 0, alias.output
    assert json.loads(alias.output) == json.loads(source.output)
    assert json.loads(alias.output)["Records"][0]["eventName"] == "INSERT"


@pytest.mark.parametrize("source", SOURCES)
def test_generate_event_takes_the_plugins_own_sample(source: str) -> None:
    """generate-event takes a source package's top-level `sample_event` and `SAMPLE_OPTIONS`
    (without loading its plugin) when the package has them: they must be the very ones its
    plugin declares; otherwise the plugin's."""
    from triggerd.config.samples import sample_maker

    registry = Registry.discover()
    make, options = sample_maker(registry, source)
    plugin = registry.source(source)
    assert make is plugin.sample_event
    assert options == plugin.sample_options
