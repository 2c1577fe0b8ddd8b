"""serverless.yml (v3, v4) translated into triggerd config, then validated by the real config
loader with the installed plugins: functions, every event type, overrides, warnings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from triggerd.config.load import validate_data
from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry
from triggerd.imports.common import Translation
from triggerd.imports.serverless import translate_serverless

DATA = Path(__file__).resolve().parents[1] / "data" / "serverless"


@dataclass(frozen=True)
class FakeResource:
    """An entry of the overrides file's `resources` (`common.ResourceOverride`)."""

    type: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeFunction:
    environment: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeOverrides:
    """The overrides file (`common.Overrides`) as the translator reads it."""

    resources: dict[str, FakeResource] = field(default_factory=dict)
    daemon: dict[str, Any] = field(default_factory=dict)
    endpoint_url: str | None = None
    region: str | None = None
    functions: dict[str, FakeFunction] = field(default_factory=dict)
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resource(self, *keys: str | None) -> FakeResource | None:
        return next((self.resources[k] for k in keys if k and k in self.resources), None)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


def validated(t: Translation, base: Path, registry: Registry) -> ConfigBase:
    return validate_data(t.config, registry, base_dir=base)


def triggers(cfg: ConfigBase) -> dict[str, Any]:
    return {cfg.trigger_name(i): t for i, t in enumerate(cfg.trigger_list)}


def warned(t: Translation) -> dict[str, str]:
    return {w.where: w.message for w in t.warnings}


# --------------------------------------------------------------------------------------------
# v3: every event type, variables of every kind, layers


@pytest.fixture(scope="module")
def v3(registry: Registry) -> tuple[Translation, ConfigBase]:
    t = translate_serverless(
        DATA / "v3" / "serverless.yml",
        overrides=None,
        options={"accountId": "210987654321"},
        environ={"ORDERS_BUCKET": "orders-inbox"},
    )
    return t, validated(t, DATA / "v3", registry)


def test_v3_functions_take_provider_defaults_and_their_own(v3: tuple[Translation, Any]) -> None:
    _, cfg = v3
    worker = cfg.function_map["worker"]
    assert (worker.runtime, worker.handler) == ("python3.11", "src/app.handler")
    assert worker.code == str(DATA / "v3")
    assert worker.memory_mb == 256  # ${self:custom.settings.memory} from settings.yml, dev
    assert worker.timeout_s == 30 and worker.reserved_concurrency == 3
    assert worker.layers == [str(DATA / "v3" / "layers" / "common")]
    assert worker.environment == {
        "STAGE": "dev",
        "REGION": "eu-west-1",
        "TABLE": "orders-dev",
        "SECRET": "local-secret",
        "TOPIC": "orders-events",
    }
    reports = cfg.function_map["reports"]
    assert (reports.runtime, reports.memory_mb, reports.timeout_s) == ("python3.12", 512, 10)
    assert "java" not in cfg.function_map
    assert cfg.daemon.region == "eu-west-1" and cfg.daemon.account_id == "210987654321"


def test_v3_queue_and_stream_events(v3: tuple[Translation, Any]) -> None:
    _, cfg = v3
    trig = triggers(cfg)
    plain = trig["worker-sqs-0"]
    assert plain.source_config.queue_url == (
        "https://sqs.eu-west-1.amazonaws.com/210987654321/orders-dev"
    )
    tuned = trig["worker-sqs-1"]
    assert tuned.source_config.queue_name == "orders-main"  # GetAtt -> the declared QueueName
    assert (tuned.batch_size, tuned.batching_window_s, tuned.maximum_concurrency) == (50, 5, 8)
    assert tuned.report_batch_item_failures and tuned.filters == [{"body": {"kind": ["order"]}}]
    ddb = trig["worker-stream-2"]
    src = ddb.source_config
    assert (src.type, src.stream, src.starting_position) == ("dynamodb_streams", "orders", "LATEST")
    assert src.parallelization_factor == 2
    assert (ddb.batch_size, ddb.batching_window_s, ddb.maximum_retry_attempts) == (200, 2, 5)
    assert ddb.maximum_record_age_s == 3600 and ddb.bisect_batch_on_function_error
    assert ddb.filters == [{"eventName": ["INSERT"]}]
    # Unmapped AWS resources: disabled as SAM's are, the failures to a file.
    assert not plain.enabled and not tuned.enabled and not ddb.enabled
    assert ddb.on_failure_config.path.endswith("v3/triggerd-dlq/worker-stream-2.jsonl")
    assert trig["worker-stream-3"].source_config.stream_name == "clicks"
    assert trig["worker-stream-4"].source_config.tumbling_window_s == 60
    kafka = trig["worker-kafka-5"]
    assert kafka.source_config.topics == ["dev-orders"]
    assert kafka.source_config.bootstrap_servers == [
        "kafka-1.internal:9092",
        "kafka-2.internal:9092",
    ]
    assert kafka.source_config.group_id == "orders-workers" and kafka.batch_size == 500
    assert kafka.source_config.starting_position == "TRIM_HORIZON"
    mq = trig["worker-rabbitmq-6"].source_config
    # No override: the local RabbitMQ, as SAM's side, never the broker on AWS.
    assert (mq.queue, mq.vhost, mq.tls, mq.host, mq.port) == (
        "orders",
        "shop",
        False,
        "localhost",
        5672,
    )
    assert "localhost:5672" in warned(v3[0])["functions.worker.events[6].rabbitmq.arn"]
    assert "guest/guest" in warned(v3[0])["functions.worker.events[6].rabbitmq.basicAuthArn"]


def test_v3_async_events_carry_the_function_async_settings(v3: tuple[Translation, Any]) -> None:
    _, cfg = v3
    trig = triggers(cfg)
    every = trig["reports-schedule-0"]
    assert every.source_config.expression == "rate(5 minutes)"
    assert (every.maximum_retry_attempts, every.maximum_event_age_s) == (1, 3600)
    assert every.on_failure_config.path.endswith("v3/triggerd-dlq/reports-schedule-0.jsonl")
    daily = [trig["reports-schedule-1"], trig["reports-schedule-1-1"]]
    assert [d.source_config.expression for d in daily] == ["cron(0 8 * * ? *)", "rate(1 hour)"]
    assert all(not d.enabled and d.source_config.input == {"report": "daily"} for d in daily)
    assert daily[0].source_config.rule_name == "daily-report"
    s3 = trig["reports-s3-2"].source_config
    assert (s3.bucket, s3.prefix, s3.suffix, s3.events) == (
        "orders-inbox",
        "uploads/",
        ".csv",
        ["ObjectCreated:*"],
    )
    assert trig["reports-s3-3"].source_config.bucket == "photos-bucket"


def test_v3_http_events(v3: tuple[Translation, Any]) -> None:
    _, cfg = v3
    trig = triggers(cfg)
    rest = trig["api-http-0"].source_config
    assert (rest.method, rest.path, rest.payload_format, rest.stage) == (
        "GET",
        "/orders/{id}",
        "1.0",
        "dev",
    )
    assert rest.cors.allow_origins == ["*"]
    assert (trig["api-http-1"].source_config.method, trig["api-http-1"].source_config.path) == (
        "POST",
        "/orders",
    )
    v2 = trig["api-httpapi-2"].source_config
    assert (v2.method, v2.path, v2.payload_format) == ("GET", "/v2/orders/{id}", "2.0")
    assert trig["api-httpapi-3"].source_config.method == "DELETE"
    catch_all = trig["api-httpapi-4"].source_config
    assert (catch_all.method, catch_all.path) == ("ANY", "/{proxy+}")


def test_v3_warnings_name_each_property_not_carried_over(v3: tuple[Translation, Any]) -> None:
    t, _ = v3
    w = warned(t)
    assert "NOT_SET_ANYWHERE" in w["functions.worker.environment.MISSING"]
    assert "QUEUE_URL" in w["provider.environment.QUEUE_URL"]
    assert "provider.deploymentBucket" in w
    assert "layers.common.compatibleRuntimes" in w
    assert "published layers" in w["functions.worker.layers[1]"]
    assert "functions.worker.events[2].stream.consumer" in w
    assert (
        "Secrets Manager"
        in w["functions.worker.events[5].kafka.accessConfigurations.saslScram512Auth"]
    )
    assert "SNS topics and event buses" in w["daemon.control_listen"]
    assert "no triggerd source" in w["functions.worker.events[9].websocket"]
    assert "onSuccess" in " ".join(w) and "functions.api.url" in w
    assert "functions.api.events[0].http.authorizer" in w
    assert "java21" in w["functions.java.runtime"]
    assert [x.where for x in t.warnings].count("provider.environment.QUEUE_URL") == 1


def test_options_choose_the_stage(registry: Registry) -> None:
    t = translate_serverless(
        DATA / "v3" / "serverless.yml",
        overrides=None,
        options={"stage": "prod", "region": "eu-central-1"},
        environ={},
    )
    cfg = validated(t, DATA / "v3", registry)
    worker = cfg.function_map["worker"]
    assert worker.memory_mb == 1024 and worker.environment["TABLE"] == "orders-prod"
    assert worker.environment["TOPIC"] == "orders-live-events"  # params.prod
    assert triggers(cfg)["worker-kafka-5"].source_config.topics == ["prod-orders"]
    assert triggers(cfg)["api-http-0"].source_config.stage == "prod"
    assert cfg.daemon.region == "eu-central-1"


# --------------------------------------------------------------------------------------------
# v4 with overrides


def test_v4_with_overrides(registry: Registry, tmp_path: Path) -> None:
    inbox = tmp_path / "receipts"
    inbox.mkdir()
    overrides = FakeOverrides(
        resources={
            "CheckoutQueue": FakeResource(
                options={"queue_url": "http://127.0.0.1:4566/q/checkout"}
            ),
            "Receipts": FakeResource("directory", {"path": str(inbox)}),
            "CartTable": FakeResource("postgres", {"tables": ["public.cart"]}),
        },
        endpoint_url="http://127.0.0.1:4566",
        functions={
            "checkout": FakeFunction({"OVERRIDDEN": "local", "EXTRA": "1"}, {"timeout_s": 20})
        },
        triggers={"checkout-schedule-4": {"enabled": False}, "nothing-0": {}},
        daemon={"control_listen": ""},
    )
    t = translate_serverless(
        DATA / "v4" / "serverless.yml", overrides=overrides, options={}, environ={}
    )
    cfg = validated(t, DATA / "v4", registry)
    fn = cfg.function_map["checkout"]
    assert (fn.runtime, fn.memory_mb, fn.timeout_s) == ("python3.11", 1024, 20)
    assert cfg.daemon.control_listen is None
    assert fn.environment == {
        "SHARED": "from-provider",
        "OVERRIDDEN": "local",
        "PORT": "8080",
        "DEBUG": "true",
        "EXTRA": "1",
    }
    trig = triggers(cfg)
    web = trig["checkout-httpapi-0"].source_config
    assert (web.payload_format, web.method, web.path) == ("1.0", "POST", "/checkout")
    assert web.cors.allow_origins == ["https://shop.example"] and web.cors.allow_credentials
    assert (web.cors.allow_headers, web.cors.max_age_s) == (["Content-Type"], 600)
    queue = trig["checkout-sqs-1"]
    assert queue.source_config.queue_url == "http://127.0.0.1:4566/q/checkout"
    assert queue.source_config.endpoint_url is None  # the entry says all there is
    assert queue.batch_size == 5
    files = trig["checkout-s3-2"].source_config
    assert (files.type, files.events, files.include) == (
        "directory",
        ["deleted"],
        ["*.pdf", "*/**/*.pdf"],  # a suffix matches at any depth
    )
    pg = trig["checkout-stream-3"].source_config
    assert (pg.type, pg.parallelization_factor) == ("postgres", 3)
    sched = trig["checkout-schedule-4"].source_config
    assert (sched.source_name, sched.timezone) == ("aws.scheduler", "Europe/Paris")
    assert not trig["checkout-schedule-4"].enabled
    w = warned(t)
    assert (
        "no postgres" not in w
        and "tumbling_window_s" in w["functions.checkout.events[3].stream.tumblingWindowInSeconds"]
    )
    assert "msk events" in w["functions.checkout.events[5].msk"]
    assert "no trigger of that name" in w["overrides.triggers.nothing-0"]


def test_v4_without_overrides_names_what_needs_one(registry: Registry) -> None:
    t = translate_serverless(DATA / "v4" / "serverless.yml", overrides=None, options={}, environ={})
    validated(t, DATA / "v4", registry)
    w = warned(t)
    assert "overrides file" in w["functions.checkout.events[1].sqs.arn"]
    assert "no bucket name" in w["functions.checkout.events[2].s3"]
    assert "overrides file" in w["functions.checkout.events[3].stream.arn"]
    assert [t["name"] for t in t.config["triggers"]] == [
        "checkout-httpapi-0",
        "checkout-schedule-4",
    ]


def test_endpoint_and_region_of_the_resources_without_an_entry(registry: Registry) -> None:
    overrides = FakeOverrides(endpoint_url="http://127.0.0.1:5000", region="us-east-2")
    t = translate_serverless(
        DATA / "v3" / "serverless.yml", overrides=overrides, options={}, environ={}
    )
    trig = triggers(validated(t, DATA / "v3", registry))
    for name in ("worker-sqs-0", "worker-stream-2", "worker-stream-3", "reports-s3-3"):
        src = trig[name].source_config
        assert (src.endpoint_url, src.region) == ("http://127.0.0.1:5000", "us-east-2"), name
    assert trig["worker-stream-2"].on_failure_config.endpoint_url == "http://127.0.0.1:5000"
    assert trig["worker-kafka-5"].source_config.type == "kafka"


EDGES = """
service: edges
frameworkVersion: '3'
provider:
  name: aws
  runtime: python3.11
  tracing: {lambda: true}
unknownTopLevel: 1
functions:
  packaged:
    handler: app.handler
    package:
      artifact: build/packaged.zip
      patterns: ['!tests/**']
    events:
      - eventBridge:
          schedule: rate(10 minutes)
          input: {from: bridge}
      - http:
          path: legacy
          method: post
          integration: lambda
          cors:
            origins: [https://a.example]
            headers: [X-Token]
            allowCredentials: true
      - kafka:
          topic: t1
          bootstrapServers: [broker-a:9092]
          accessConfigurations:
            vpcSubnet: subnet-1
      - rabbitmq:
          arn: arn:aws:mq:eu-west-1:123456789012:broker:shop:b-0000
          queue: jobs
      - sqs:
          arn: !ImportValue shared-queue-arn
      - stream:
          arn: arn:aws:dynamodb:eu-west-1:123456789012:table/carts/stream/2024-01-01T00:00:00.000
          startingPosition: ${env:POSITION}
  container:
    image: 123.dkr.ecr.eu-west-1.amazonaws.com/app:latest
  old:
    handler: app.handler
    runtime: python3.8
"""


def test_edges(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "packaged.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (tmp_path / "serverless.yml").write_text(EDGES)
    overrides = FakeOverrides(
        resources={
            "broker-a:9092": FakeResource(options={"bootstrap_servers": ["127.0.0.1:19092"]}),
            "arn:aws:mq:eu-west-1:123456789012:broker:shop:b-0000": FakeResource(
                options={"url": "amqp://guest:guest@127.0.0.1:5672/"}
            ),
        }
    )
    t = translate_serverless(
        tmp_path / "serverless.yml", overrides=overrides, options={}, environ={}
    )
    cfg = validated(t, tmp_path, registry)
    assert cfg.function_map["packaged"].code == str(tmp_path / "build" / "packaged.zip")
    assert "container" not in cfg.function_map
    trig = triggers(cfg)
    bridge = trig["packaged-eventbridge-0"].source_config
    assert (bridge.expression, bridge.input) == ("rate(10 minutes)", {"from": "bridge"})
    rest = trig["packaged-http-1"].source_config
    assert rest.cors.allow_origins == ["https://a.example"] and rest.cors.allow_credentials
    assert rest.cors.allow_headers == ["X-Token"]
    assert trig["packaged-kafka-2"].source_config.bootstrap_servers == ["127.0.0.1:19092"]
    mq = trig["packaged-rabbitmq-3"].source_config
    assert (mq.endpoint, mq.queue, mq.broker_arn) == (
        "127.0.0.1:5672",
        "jobs",
        "arn:aws:mq:eu-west-1:123456789012:broker:shop:b-0000",
    )
    stream = trig["packaged-stream-5"].source_config
    assert (stream.type, stream.table_name) == ("dynamodb_streams", "carts")
    assert "packaged-sqs-4" not in trig
    w = warned(t)
    assert "noted" in w["functions.packaged.package.patterns"]
    assert "proxy integration" in w["functions.packaged.events[1].http.integration"]
    assert "VPC" in w["functions.packaged.events[2].kafka.accessConfigurations.vpcSubnet"]
    assert "ImportValue" in w["functions.packaged.events[4].sqs.arn"]
    assert "env:POSITION" in w["functions.packaged.events[5].stream.startingPosition"]
    assert "cannot run locally" in w["functions.container.image"]
    assert "python3.8 has no local runtime" in w["functions.old.runtime"]
    assert set(cfg.function_map) == {"packaged"}
    assert "provider.tracing" in w and "unknownTopLevel" in w


STREAMS_YML = """\
service: streams
provider: {name: aws, runtime: python3.11}
functions:
  f:
    handler: app.handler
    events:
      - stream: {type: dynamodb, arn: !GetAtt Orders.StreamArn}
      - stream: {type: kinesis, arn: "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"}
resources:
  Resources:
    Orders:
      Type: AWS::DynamoDB::Table
      Properties:
        TableName: orders
        StreamSpecification: {StreamViewType: NEW_AND_OLD_IMAGES}
"""


def test_stream_overrides_read_the_named_table_and_the_files_endpoint(tmp_path: Path) -> None:
    from triggerd.imports.common import Overrides

    (tmp_path / "serverless.yml").write_text(STREAMS_YML)
    overrides = Overrides.model_validate(
        {
            "endpoint_url": "http://127.0.0.1:5000",
            "resources": {
                "Orders": {"type": "postgres", "dsn": "postgresql://u@127.0.0.1/db"},
                "clicks": {"poll_interval_s": 0.1},
            },
        }
    )
    t = translate_serverless(
        tmp_path / "serverless.yml", overrides=overrides, options={}, environ={}
    )
    table, kinesis = (trig["source"] for trig in t.config["triggers"])
    # the table's stream mapped to PostgreSQL: that table, with its StreamViewType
    assert (table["type"], table["tables"]) == ("postgres", ["orders"])
    assert table["stream_view_type"] == "NEW_AND_OLD_IMAGES"
    # an entry that only tunes the stream: still read from the file's endpoint
    assert kinesis["endpoint_url"] == "http://127.0.0.1:5000"
    assert kinesis["poll_interval_s"] == 0.1
