"""`translate_sam`: a SAM template with every event type triggerd translates, Globals,
parameters, conditions, intrinsic functions and layers (tests/data/sam/template.yaml), checked
trigger by trigger and validated by the real config loader; the overrides file's mappings;
a warning for each property not carried over."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from triggerd.config.load import validate_data
from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry
from triggerd.imports.common import Overrides, Translation
from triggerd.imports.sam import translate_sam
from triggerd.imports.sam_template import Template, Unresolved
from triggerd.types import ConfigError

pytest.importorskip("cfnlint")

DATA = Path(__file__).resolve().parents[1] / "data" / "sam"
TEMPLATE = DATA / "template.yaml"


def validated(translation: Translation) -> ConfigBase:
    return validate_data(translation.config, Registry.discover(), base_dir=DATA)


def triggers(translation: Translation) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in translation.config["triggers"]}


def warnings(translation: Translation) -> dict[str, str]:
    return {w.where: w.message for w in translation.warnings}


@pytest.fixture(scope="module")
def default() -> Translation:
    return translate_sam(TEMPLATE, overrides=None, parameters={})


def test_the_translation_is_a_valid_config(default: Translation) -> None:
    cfg = validated(default)
    assert sorted(cfg.functions) == ["ApiFunction", "WorkerFunction"]
    assert len(cfg.trigger_list) == 12


def test_functions_with_globals_layers_and_intrinsics(default: Translation) -> None:
    api = default.config["functions"]["ApiFunction"]
    assert api["runtime"] == "python3.11"  # Globals
    assert api["handler"] == "app.handler"
    assert api["code"] == "src/api"
    assert api["timeout_s"] == 10.0
    assert api["memory_mb"] == 256  # Globals: !FindInMap [Sizes, !Ref Stage, Memory]
    assert api["layers"] == ["layers/common"]  # the template's LayerVersion's ContentUri
    assert api["environment"] == {
        "STAGE": "dev",  # Globals' variables merged with the function's
        "TABLE": "orders",
        "GREETING": "hello from dev",  # !If on an !And condition, !Sub with a parameter
        "REGION": "us-east-1/123456789012/aws/amazonaws.com",  # pseudo-parameters
        "ENCODED": "YWJj",  # !Base64
        "FIRST": "a",  # !Select of !Split
        "QUEUE_ARN": "arn:aws:sqs:us-east-1:123456789012:local-jobs",  # QueueName: !Sub
        "QUEUE_NAME": "local-jobs",
        "LITERAL": "${NotAVariable}",  # a plain string, not an intrinsic
    }  # NOTHING: !If [IsProd, always, !Ref AWS::NoValue] is left out
    worker = default.config["functions"]["WorkerFunction"]
    assert worker["memory_mb"] == 512  # the function's own value wins over Globals
    assert worker["reserved_concurrency"] == 3
    cfg = validated(default)
    assert cfg.function_map["ApiFunction"].environment["LITERAL"] == "${NotAVariable}"  # type: ignore[attr-defined]


def test_parameter_overrides_and_conditions() -> None:
    prod = translate_sam(TEMPLATE, overrides=None, parameters={"Stage": "prod"})
    functions = prod.config["functions"]
    assert "ProdOnly" in functions  # Condition: IsProd
    assert functions["ApiFunction"]["memory_mb"] == 1024
    assert functions["ApiFunction"]["environment"]["GREETING"] == "bye"
    assert functions["ApiFunction"]["environment"]["NOTHING"] == "always"
    assert triggers(prod)["ApiFunction-Rest"]["source"]["stage"] == "prod"
    validated(prod)
    bad = translate_sam(TEMPLATE, overrides=None, parameters={"Stage": "qa", "Nope": "1"})
    found = warnings(bad)
    assert "AllowedValues" in found["Parameters.Stage"]
    assert "no such parameter" in found["Parameters"]


def test_api_and_http_api_routes(default: Translation) -> None:
    found = triggers(default)
    rest = found["ApiFunction-Rest"]["source"]
    assert rest == {
        "type": "webhook",
        "path": "/orders/{id}",
        "method": "GET",
        "payload_format": "1.0",
        "stage": "dev",
        "stage_variables": {"color": "blue"},
        "binary_media_types": ["image/png"],  # Globals.Api, ~1 unescaped
        "cors": {"allow_origins": ["*"]},
    }
    http = found["ApiFunction-Http"]["source"]
    assert http["payload_format"] == "2.0"
    assert http["stage"] == "v1"
    assert http["stage_variables"] == {"flavour": "mint"}
    assert http["timeout_s"] == 5.0
    assert http["method"] == "POST"
    implicit = found["ApiFunction-Implicit"]["source"]
    assert (implicit["stage"], implicit["method"]) == ("Prod", "ANY")
    assert (
        "not enforced"
        in warnings(default)["Resources.ApiFunction.Properties.Events.Rest.Properties.Auth"]
    )


def test_sqs_event_without_a_local_queue_is_disabled_with_a_warning(default: Translation) -> None:
    queue = triggers(default)["WorkerFunction-Queue"]
    assert queue["enabled"] is False
    assert queue["batch_size"] == 5  # !Ref BatchSize (a Number parameter)
    assert queue["batching_window_s"] == 2.0
    assert queue["report_batch_item_failures"] is True
    assert queue["maximum_concurrency"] == 5
    assert queue["filters"] == [{"body": {"kind": ["image"]}}]
    assert queue["source"]["queue_url"].endswith("/123456789012/local-jobs")
    where = "Resources.WorkerFunction.Properties.Events.Queue.Properties.Queue"
    assert "trigger is disabled" in warnings(default)[where]


def test_async_sources_take_event_invoke_config(default: Translation) -> None:
    found = triggers(default)
    for name in ("WorkerFunction-Upload", "WorkerFunction-Nightly", "WorkerFunction-Hourly"):
        assert found[name]["maximum_retry_attempts"] == 1
        assert found[name]["maximum_event_age_s"] == 600.0
        assert found[name]["on_failure"] == {
            "type": "file",
            "path": f"triggerd-dlq/{name}.jsonl",
        }
    assert "maximum_retry_attempts" not in found["WorkerFunction-Queue"]


def test_s3_and_schedules(default: Translation) -> None:
    found = triggers(default)
    assert found["WorkerFunction-Upload"]["source"] == {
        "type": "s3",
        "bucket": "uploads-dev",  # !Join
        "events": ["s3:ObjectCreated:*"],
        "prefix": "incoming/",
        "suffix": ".jpg",
    }
    nightly = found["WorkerFunction-Nightly"]
    assert nightly["enabled"] is True
    assert nightly["source"] == {
        "type": "schedule",
        "expression": "cron(0 3 * * ? *)",
        "rule_name": "nightly",
        "input": {"job": "nightly"},
    }
    hourly = found["WorkerFunction-Hourly"]
    assert hourly["enabled"] is False  # State: DISABLED
    assert hourly["source"]["source_name"] == "aws.scheduler"
    assert hourly["source"]["timezone"] == "Europe/Paris"
    where = "Resources.WorkerFunction.Properties.Events.Hourly.Properties.FlexibleTimeWindow"
    assert where in warnings(default)


def test_streams(default: Translation) -> None:
    found = triggers(default)
    stream = found["WorkerFunction-Stream"]
    assert stream["batch_size"] == 100
    assert stream["maximum_retry_attempts"] == 3
    assert stream["bisect_batch_on_function_error"] is True
    assert stream["maximum_record_age_s"] == 3600.0
    assert stream["source"]["type"] == "dynamodb_streams"
    assert stream["source"]["starting_position"] == "TRIM_HORIZON"
    assert stream["source"]["tumbling_window_s"] == 30
    assert stream["on_failure"]["type"] == "file"  # Failures has no local queue
    kinesis = found["WorkerFunction-Kinesis"]
    assert kinesis["enabled"] is False  # Enabled: false
    assert kinesis["source"]["starting_position"] == "AT_TIMESTAMP"
    assert kinesis["source"]["starting_position_timestamp"] == 1700000000.0
    assert kinesis["source"]["parallelization_factor"] == 2


def test_brokers(default: Translation) -> None:
    found = triggers(default)
    rabbit = found["WorkerFunction-Rabbit"]["source"]
    assert (rabbit["type"], rabbit["queue"]) == ("rabbitmq", "orders")
    # GetAtt Broker.Arn: an Amazon MQ broker ARN (broker:NAME:ID), as eventSourceArn has it.
    assert re.fullmatch(
        r"arn:aws:mq:us-east-1:123456789012:broker:Broker:b-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}",
        rabbit["broker_arn"],
    )
    assert set(rabbit) == {"type", "queue", "broker_arn"}
    kafka = found["WorkerFunction-SelfKafka"]["source"]
    assert kafka["bootstrap_servers"] == ["broker-1:9092", "broker-2:9092"]  # a list parameter
    assert (kafka["topics"], kafka["group_id"]) == (["payments"], "payments-group")
    msk = found["WorkerFunction-Msk"]["source"]
    assert msk["bootstrap_servers"] == ["localhost:9092"]
    assert msk["starting_position"] == "TRIM_HORIZON"
    assert msk["cluster_arn"] == "arn:aws:kafka:us-east-1:123456789012:cluster/Cluster"
    assert "cluster_arn" not in kafka  # self-managed: SelfManagedKafka events
    found_warnings = warnings(default)
    assert (
        "localhost:5672"
        in found_warnings["Resources.WorkerFunction.Properties.Events.Rabbit.Properties.Broker"]
    )


def test_warnings_name_what_is_not_carried_over(default: Translation) -> None:
    found = warnings(default)
    events = "Resources.WorkerFunction.Properties.Events"
    assert "served on the control listener (127.0.0.1:9071)" in found["daemon.control_listen"]
    assert "no triggerd source" in found[f"{events}.Logs.Type"]
    assert "ignored" in found["Resources.ApiFunction.Properties.AutoPublishAlias"]
    assert "ignored" in found["Resources.ApiFunction.Properties.Tracing"]
    assert "ignored" in found["Resources.WorkerFunction.Properties.Policies"]
    assert "credentials" in found[f"{events}.Rabbit.Properties.SourceAccessConfigurations"]
    assert "condition IsProd is false" in found["Resources.ProdOnly"]
    assert "java21" in found["Resources.JavaFunction.Properties.Runtime"]


def test_a_stream_override_without_an_endpoint_reads_the_files_endpoint() -> None:
    overrides = Overrides.model_validate(
        {
            "endpoint_url": "http://127.0.0.1:5000",
            "region": "eu-west-1",
            "resources": {
                "Clicks": {"poll_interval_s": 0.1},
                "Orders": {"type": "postgres", "stream_view_type": "KEYS_ONLY"},
            },
        }
    )
    found = triggers(translate_sam(TEMPLATE, overrides=overrides, parameters={}))
    kinesis = found["WorkerFunction-Kinesis"]["source"]
    assert (kinesis["endpoint_url"], kinesis["region"]) == ("http://127.0.0.1:5000", "eu-west-1")
    assert (kinesis["stream"], kinesis["poll_interval_s"]) == ("clicks", 0.1)
    # the override's own stream_view_type wins over the table's
    assert found["WorkerFunction-Stream"]["source"]["stream_view_type"] == "KEYS_ONLY"


def test_entries_that_name_no_endpoint_never_point_a_trigger_at_aws() -> None:
    """Entries that only tune an AWS source (no endpoint_url, no queue_url) in a file with no
    endpoint_url: the bucket's, queue's and stream's triggers are disabled with a warning,
    and the on-failure queue becomes a file; with the file's endpoint_url they read it."""
    entries = {
        "Uploads": {"poll_interval_s": 1},
        "Jobs": {"visibility_timeout_s": 60},
        "Clicks": {"poll_interval_s": 0.1},
        "Failures": {"type": "sqs"},
    }
    bare = translate_sam(
        TEMPLATE, overrides=Overrides.model_validate({"resources": entries}), parameters={}
    )
    found = triggers(bare)
    for name in ("WorkerFunction-Upload", "WorkerFunction-Queue", "WorkerFunction-Kinesis"):
        assert found[name]["enabled"] is False, name
        assert "endpoint_url" not in found[name]["source"], name
    assert found["WorkerFunction-Upload"]["source"]["poll_interval_s"] == 1  # kept, for later
    assert found["WorkerFunction-Stream"]["on_failure"]["type"] == "file"
    notes = " ".join(warnings(bare).values())
    for key in ("Uploads", "Clicks"):
        assert f"the override of {key} names no endpoint_url" in notes
    assert "the override of Jobs names no queue_url or endpoint_url" in notes
    assert "the override of Failures names no queue_url or endpoint_url" in notes
    emulated = Overrides.model_validate(
        {"endpoint_url": "http://127.0.0.1:5000", "region": "eu-west-1", "resources": entries}
    )
    found = triggers(translate_sam(TEMPLATE, overrides=emulated, parameters={}))
    upload = found["WorkerFunction-Upload"]
    assert "enabled" not in upload
    assert {
        k: v for k, v in upload["source"].items() if k not in ("events", "prefix", "suffix")
    } == {
        "type": "s3",
        "bucket": "uploads-dev",
        "path_style": True,
        "endpoint_url": "http://127.0.0.1:5000",
        "region": "eu-west-1",
        "poll_interval_s": 1,
    }
    queue = found["WorkerFunction-Queue"]
    assert "enabled" not in queue
    assert queue["source"]["queue_url"] == "http://127.0.0.1:5000/123456789012/local-jobs"
    assert (queue["source"]["region"], queue["source"]["visibility_timeout_s"]) == ("eu-west-1", 60)
    assert found["WorkerFunction-Kinesis"]["source"]["endpoint_url"] == "http://127.0.0.1:5000"
    failures = found["WorkerFunction-Stream"]["on_failure"]
    assert failures["queue_url"] == "http://127.0.0.1:5000/123456789012/Failures"


def test_overrides_map_resources_to_local_ones(tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    overrides = Overrides.model_validate(
        {
            "daemon": {"listen": "127.0.0.1:0", "control_listen": "127.0.0.1:0"},
            "endpoint_url": "http://127.0.0.1:5000",
            "resources": {
                "Uploads": {"type": "directory", "path": str(tmp_path / "uploads")},
                "Orders": {"type": "postgres", "slot": "orders_slot"},
                "arn:aws:kinesis:us-east-1:123456789012:stream/clicks": {
                    "endpoint_url": "http://127.0.0.1:4567"
                },
                "Jobs": {"type": "rabbitmq", "host": "127.0.0.1"},
                "Cluster": {"bootstrap_servers": ["127.0.0.1:19092"]},
                "Typo": {"type": "sqs"},
            },
            "functions": {"ApiFunction": {"environment": {"GREETING": "hi"}}},
            "triggers": {
                "WorkerFunction-Kinesis": {"enabled": True, "batch_size": 7},
                "Nobody-Event": {"enabled": False},
            },
        }
    )
    result = translate_sam(TEMPLATE, overrides=overrides, parameters={})
    found = triggers(result)
    assert found["WorkerFunction-Queue"]["source"] == {
        "type": "rabbitmq",
        "queue": "local-jobs",
        "host": "127.0.0.1",
    }
    assert "enabled" not in found["WorkerFunction-Queue"]
    upload = found["WorkerFunction-Upload"]["source"]
    assert upload["type"] == "directory"
    assert upload["events"] == ["created", "modified"]
    assert upload["include"] == ["incoming/*.jpg", "incoming/*/**/*.jpg"]
    stream = found["WorkerFunction-Stream"]["source"]
    assert stream["type"] == "postgres" and stream["tables"] == ["orders"]
    assert stream["stream_view_type"] == "NEW_AND_OLD_IMAGES"  # the table's StreamSpecification
    # options the postgres source does not have are left out with a warning
    assert "starting_position" not in stream
    kinesis = found["WorkerFunction-Kinesis"]
    assert kinesis["source"]["endpoint_url"] == "http://127.0.0.1:4567"
    assert kinesis["source"]["stream"] == "clicks"
    assert (kinesis["enabled"], kinesis["batch_size"]) == (True, 7)
    assert found["WorkerFunction-Msk"]["source"]["bootstrap_servers"] == ["127.0.0.1:19092"]
    # the default endpoint: the Failures queue as an SQS destination there
    assert found["WorkerFunction-Nightly"]["on_failure"] == {
        "type": "sqs",
        "queue_url": "http://127.0.0.1:5000/123456789012/Failures",
        "endpoint_url": "http://127.0.0.1:5000",
    }
    assert result.config["functions"]["ApiFunction"]["environment"]["GREETING"] == "hi"
    assert result.config["daemon"]["control_listen"] == "127.0.0.1:0"
    found_warnings = warnings(result)
    assert "names it" in found_warnings["overrides.resources.Typo"]
    assert "no such trigger" in found_warnings["overrides.triggers.Nobody-Event"]
    assert "overrides.resources.Jobs" not in found_warnings
    validated(result)


def test_default_endpoint_reads_every_aws_resource_there() -> None:
    overrides = Overrides(endpoint_url="http://127.0.0.1:5000", region="eu-west-1")
    found = triggers(translate_sam(TEMPLATE, overrides=overrides, parameters={}))
    assert found["WorkerFunction-Queue"]["source"] == {
        "type": "sqs",
        "queue_url": "http://127.0.0.1:5000/123456789012/local-jobs",
        "endpoint_url": "http://127.0.0.1:5000",
        "region": "eu-west-1",
    }
    assert found["WorkerFunction-Stream"]["source"]["stream"] == "orders"  # the table's name
    assert found["WorkerFunction-Upload"]["source"]["path_style"] is True
    for name in ("WorkerFunction-Queue", "WorkerFunction-Upload", "WorkerFunction-Stream"):
        assert "enabled" not in found[name]


def template(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    (tmp_path / "src").mkdir(exist_ok=True)
    return path


FUNCTION = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: src
{extra}
"""


def test_unresolvable_values_are_warnings(tmp_path: Path) -> None:
    extra = """      Environment:
        Variables:
          A: !ImportValue shared-export
          B: !GetAtt Fn.Nope
          C: !Ref Missing
      SomethingNew: 1
    Metadata:
      BuildMethod: esbuild
"""
    result = translate_sam(
        template(tmp_path, FUNCTION.format(extra=extra)), overrides=None, parameters={}
    )
    found = warnings(result)
    env = "Resources.Fn.Properties.Environment.Variables"
    assert "another stack's export" in found[f"{env}.A"]
    assert "not known locally" in found[f"{env}.B"]
    assert "no such parameter or resource" in found[f"{env}.C"]
    assert "no local equivalent" in found["Resources.Fn.Properties.SomethingNew"]
    assert "sam build" in found["Resources.Fn.Metadata.BuildMethod"]
    assert "environment" not in result.config["functions"]["Fn"]
    inline = FUNCTION.format(extra='      InlineCode: "def handler(e, c): pass"')
    result = translate_sam(template(tmp_path, inline), overrides=None, parameters={})
    assert (
        "written to .triggerd-inline/Fn/app.py"
        in warnings(result)["Resources.Fn.Properties.InlineCode"]
    )
    assert result.files == {".triggerd-inline/Fn/app.py": "def handler(e, c): pass"}
    assert result.config["functions"]["Fn"]["code"] == ".triggerd-inline/Fn"
    odd = inline.replace("python3.11", "provided.al2023")
    result = translate_sam(template(tmp_path, odd), overrides=None, parameters={})
    assert "not written out" in warnings(result)["Resources.Fn.Properties.InlineCode"]
    assert result.config["functions"] == {}


def test_template_errors_are_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        translate_sam(template(tmp_path, "Resources: [\n"), overrides=None, parameters={})
    assert all(str(tmp_path) in p for p in exc.value.problems)
    with pytest.raises(ConfigError, match="no Resources section"):
        translate_sam(template(tmp_path, "Description: x\n"), overrides=None, parameters={})
    with pytest.raises(ConfigError, match="cannot read the template"):
        translate_sam(tmp_path / "absent.yaml", overrides=None, parameters={})
    deep = tmp_path / "deep.json"
    deep.write_text('{"Resources": {"A": ' + "[" * 5000 + "]" * 5000 + "}}")
    with pytest.raises(ConfigError) as nested:
        translate_sam(deep, overrides=None, parameters={})
    assert len(nested.value.problems) == 1


def test_intrinsics() -> None:
    tpl = Template.create(
        {
            "Parameters": {"Env": {"Type": "String", "Default": "dev"}, "Free": {"Type": "String"}},
            "Mappings": {"M": {"dev": {"Size": 1}}},
            "Resources": {"Q": {"Type": "AWS::SQS::Queue"}},
        },
        {"AWS::Region": "eu-west-1"},
    )
    assert tpl.resolve({"Fn::Sub": ["${A}-${Env}-${!Literal}", {"A": {"Ref": "Env"}}]}) == (
        "dev-dev-${Literal}"
    )
    assert tpl.resolve({"Fn::Sub": "${Q.Arn}"}) == "arn:aws:sqs:eu-west-1:123456789012:Q"
    assert tpl.resolve({"Ref": "Q"}) == "https://sqs.eu-west-1.amazonaws.com/123456789012/Q"
    assert tpl.resolve({"Fn::FindInMap": ["M", "prod", "Size", {"DefaultValue": 9}]}) == 9
    assert tpl.resolve({"Fn::Join": ["", ["a", {"Ref": "AWS::StackName"}]]}) == "alocal"
    assert tpl.resolve({"Fn::GetAZs": ""})[0] == "eu-west-1a"
    secret = Template.create(
        {"Parameters": {"Key": {"Type": "String", "NoEcho": True, "AllowedValues": ["a"]}}},
        {"Key": "hunter2"},
    )
    assert secret.problems == [("Parameters.Key", "the value is not one of AllowedValues ['a']")]
    assert tpl.resolve({"k": {"Ref": "AWS::NoValue"}, "j": [1, {"Ref": "AWS::NoValue"}]}) == {
        "j": [1]
    }
    looped = Template.create(
        {
            "Resources": {
                "L": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Ref": "L"}}}
            }
        },
        {},
    )
    assert looped.resolve({"Fn::GetAtt": ["L", "QueueName"]}).endswith("/L")  # no endless loop
    with pytest.raises(Unresolved, match="--parameter-overrides Free=VALUE"):
        tpl.resolve({"Ref": "Free"})
    with pytest.raises(Unresolved, match=r"no M\.prod\.Other"):
        tpl.resolve({"Fn::FindInMap": ["M", "prod", "Other"]})


def test_malformed_values_are_warnings_not_tracebacks(tmp_path: Path) -> None:
    text = """
Globals: [not, a, mapping]
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: src
      Events:
        Queue:
          Type: SQS
          Properties:
            Queue: arn:aws:sqs:us-east-1:123456789012:q
            BatchSize: lots
        Api:
          Type: HttpApi
  Other:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: src
      Events: [a, b]
  Broken:
    Type: AWS::Serverless::Function
    Properties: [1, 2]
"""
    overrides = Overrides.model_validate({"functions": {"Fn": {"environment": {"PORT": 8080}}}})
    result = translate_sam(template(tmp_path, text), overrides=overrides, parameters={})
    found = warnings(result)
    assert "not a mapping" in found["Globals"]
    assert "expected kind" in found["Resources.Fn.Properties.Events.Queue"]
    assert "not a mapping" in found["Resources.Other.Properties.Events"]
    assert "not translated" in found["Resources.Broken.Properties"]
    assert [t["name"] for t in result.config["triggers"]] == ["Fn-Api"]
    assert result.config["functions"]["Fn"]["environment"] == {"PORT": "8080"}
    validated_here = validate_data(result.config, Registry.discover(), base_dir=tmp_path)
    assert sorted(validated_here.functions) == ["Fn", "Other"]


EDGES = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Active:
    Type: AWS::AmazonMQ::Broker
    Properties: {EngineType: ACTIVEMQ}
  Dead:
    Type: AWS::SQS::Queue
  Bucket:
    Type: AWS::S3::Bucket
  Http:
    Type: AWS::Serverless::HttpApi
    Properties:
      CorsConfiguration:
        AllowOrigins: [https://example.com]
        AllowMethods: [GET]
        MaxAge: 60
  Rest:
    Type: AWS::Serverless::Api
    Properties:
      StageName: v2
      EndpointConfiguration: REGIONAL
      Cors:
        AllowOrigin: "'https://example.com'"
        AllowMethods: "'GET,POST'"
        MaxAge: "'30'"
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: nodejs20.x
      Handler: index.handler
      CodeUri: src
      Architectures: [ARCH]
      Layers: [arn:aws:lambda:us-east-1:123456789012:layer:shared:3]
      DeadLetterQueue: {Type: SQS, TargetArn: !GetAtt Dead.Arn}
      Events:
        Mq:
          Type: MQ
          Properties: {Broker: !GetAtt Active.Arn, Queues: [q]}
        Kafka:
          Type: SelfManagedKafka
          Properties:
            KafkaBootstrapServers: [kafka.internal:9092]
            Topics: [t]
            SelfManagedKafkaEventSourceConfig: {ConsumerGroupId: g}
        Tick:
          Type: Schedule
          Properties:
            Schedule: rate(5 minutes)
            RetryPolicy: {MaximumRetryAttempts: 5, MaximumEventAgeInSeconds: 30}
            DeadLetterConfig: {Arn: !GetAtt Dead.Arn}
        Upload:
          Type: S3
          Properties: {Bucket: !Ref Bucket, Events: [s3:ObjectRemoved:*]}
        Default:
          Type: HttpApi
          Properties: {ApiId: !Ref Http}
        Page:
          Type: Api
          Properties: {RestApiId: !Ref Rest, Path: /page, Method: get}
        NoPath:
          Type: Api
          Properties: {RestApiId: !Ref Rest, Method: get}
"""


def test_a_function_given_another_backend(tmp_path: Path) -> None:
    overrides = Overrides.model_validate(
        {"functions": {"Fn": {"settings": {"backend": "http", "url": "http://127.0.0.1:9/x"}}}}
    )
    extra = """      Environment: {Variables: {A: b}}
      Timeout: 7
"""
    path = template(tmp_path, FUNCTION.format(extra=extra).replace("python3.11", "java21"))
    result = translate_sam(path, overrides=overrides, parameters={})
    assert result.config["functions"]["Fn"] == {
        "backend": "http",
        "url": "http://127.0.0.1:9/x",
        "timeout_s": 7.0,
    }
    assert "environment: the http backend has no such setting" in str(result.warnings)
    validate_data(result.config, Registry.discover(), base_dir=tmp_path)


def test_less_common_properties(tmp_path: Path) -> None:
    import platform

    other = "x86_64" if platform.machine().lower() in ("aarch64", "arm64") else "arm64"
    overrides = Overrides.model_validate(
        {
            "endpoint_url": "http://127.0.0.1:5000",
            "resources": {
                "kafka.internal:9092": {"bootstrap_servers": ["127.0.0.1:9092"]},
                "Bucket": {"type": "directory", "path": str(tmp_path)},
            },
        }
    )
    path = template(tmp_path, EDGES.replace("ARCH", other))
    result = translate_sam(path, overrides=overrides, parameters={})
    found = triggers(result)
    notes = warnings(result)
    events = "Resources.Fn.Properties.Events"
    assert "Fn-Mq" not in found and "ACTIVEMQ" in notes[f"{events}.Mq.Properties.Broker"]
    kafka = found["Fn-Kafka"]["source"]
    assert (kafka["bootstrap_servers"], kafka["group_id"]) == (["127.0.0.1:9092"], "g")
    tick = found["Fn-Tick"]
    # The rule's RetryPolicy / DeadLetterConfig are delivery retries: the function's
    # retries stay its own, its on-failure the DeadLetterQueue's.
    assert "maximum_retry_attempts" not in tick and "maximum_event_age_s" not in tick
    assert tick["on_failure"] == {
        "type": "sqs",
        "queue_url": "http://127.0.0.1:5000/123456789012/Dead",
        "endpoint_url": "http://127.0.0.1:5000",
    }
    for key in ("RetryPolicy", "DeadLetterConfig"):
        assert "delivery retries are not simulated" in notes[f"{events}.Tick.Properties.{key}"]
    upload = found["Fn-Upload"]
    assert upload["source"]["events"] == ["deleted"]
    assert upload["on_failure"]["queue_url"].endswith("/Dead")  # DeadLetterQueue
    default_route = found["Fn-Default"]["source"]
    assert (default_route["path"], default_route["method"]) == ("/{proxy+}", "ANY")
    assert default_route["cors"] == {
        "allow_origins": ["https://example.com"],
        "allow_methods": ["GET"],
        "max_age_s": 60,
    }
    page = found["Fn-Page"]["source"]
    assert page["stage"] == "v2"
    assert page["cors"] == {
        "allow_origins": ["https://example.com"],
        "allow_methods": ["GET", "POST"],
        "max_age_s": 30,
    }
    assert "webhook routes" in notes["Resources.Rest.Properties.EndpointConfiguration"]
    assert "needs a Path" in notes[f"{events}.NoPath"]
    assert "not fetched" in notes["Resources.Fn.Properties.Layers.0"]
    assert other in notes["Resources.Fn.Properties.Architectures"]
    assert result.config["functions"]["Fn"]["runtime"] == "nodejs20.x"
    validated_here = validate_data(result.config, Registry.discover(), base_dir=tmp_path)
    assert len(validated_here.trigger_list) == 5


def test_enabled_never_reads_an_unmapped_aws_queue(tmp_path: Path) -> None:
    extra = """      Events:
        Q:
          Type: SQS
          Properties:
            Queue: arn:aws:sqs:us-east-1:123456789012:real-queue
            Enabled: true
"""
    path = template(tmp_path, FUNCTION.format(extra=extra))
    result = translate_sam(path, overrides=None, parameters={})
    assert triggers(result)["Fn-Q"]["enabled"] is False
    mapped = Overrides.model_validate(
        {"resources": {"real-queue": {"queue_url": "http://127.0.0.1:1/1/q", "queue_ur": "x"}}}
    )
    result = translate_sam(path, overrides=mapped, parameters={})
    assert triggers(result)["Fn-Q"]["enabled"] is True
    with pytest.raises(ConfigError, match=r"triggers\.0\.source\.queue_ur: unknown key"):
        validate_data(result.config, Registry.discover(), base_dir=tmp_path)
