"""Fixes to the SAM and serverless importers: AWS::NoValue in event properties, the
AWS::LanguageExtensions intrinsics and unknown ones, pseudo-parameters, schedules' delivery
retries, warnings that cannot inject config, shell-quoted parameter values."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from triggerd.cli.imports import pairs, printable
from triggerd.cli.main import main
from triggerd.imports.common import Translation
from triggerd.imports.sam import translate_sam
from triggerd.imports.sam_template import Template, Unresolved

pytest.importorskip("cfnlint")

FUNCTION = """
Transform: [AWS::LanguageExtensions, AWS::Serverless-2016-10-31]
Conditions:
  Never: !Equals [a, b]
Resources:
  Work:
    Type: AWS::SQS::Queue
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: src
{extra}
"""


def translate(tmp_path: Path, extra: str) -> Translation:
    path = tmp_path / "template.yaml"
    path.write_text(FUNCTION.format(extra=extra))
    (tmp_path / "src").mkdir(exist_ok=True)
    return translate_sam(path, overrides=None, parameters={})


def triggers(translation: Translation) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in translation.config["triggers"]}


def warnings(translation: Translation) -> dict[str, str]:
    return {w.where: w.message for w in translation.warnings}


def test_no_value_in_an_event_property_is_the_default(tmp_path: Path) -> None:
    extra = """      Events:
        Q:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            BatchSize: !If [Never, 10, !Ref AWS::NoValue]
"""
    result = translate(tmp_path, extra)
    found = triggers(result)
    assert "Fn-Q" in found  # the event is kept, BatchSize left at its default
    assert "batch_size" not in found["Fn-Q"]["source"]
    assert not [w for w in result.warnings if "BatchSize" in w.where]


def test_unsupported_values_of_esm_properties_are_warnings(tmp_path: Path) -> None:
    """A FunctionResponseTypes value other than ReportBatchItemFailures, a ScalingConfig key
    other than MaximumConcurrency, a FilterCriteria key other than Filters and a filter with
    no Pattern are each a warning (they were dropped without one); the rest is kept."""
    extra = """      Events:
        Q:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            FunctionResponseTypes: [ReportBatchItemFailures, Bogus]
            ScalingConfig: {MaximumConcurrency: 3, MinimumPollers: 2}
            FilterCriteria:
              Filters: [{Pattern: '{"body": {"a": [1]}}'}, {Other: x}]
              Extra: 1
"""
    result = translate(tmp_path, extra)
    trigger = triggers(result)["Fn-Q"]
    assert trigger["report_batch_item_failures"] is True
    assert (trigger["maximum_concurrency"], trigger["filters"]) == (3, [{"body": {"a": [1]}}])
    notes = warnings(result)
    at = "Resources.Fn.Properties.Events.Q.Properties"
    assert "'Bogus': only ReportBatchItemFailures" in notes[f"{at}.FunctionResponseTypes"]
    assert "not carried over" in notes[f"{at}.ScalingConfig.MinimumPollers"]
    assert "not carried over" in notes[f"{at}.FilterCriteria.Extra"]
    assert "no Pattern" in notes[f"{at}.FilterCriteria.Filters.1"]


def test_a_self_managed_kafka_off_this_machine_is_a_warning(tmp_path: Path) -> None:
    """SelfManagedKafka (and serverless kafka) events read the servers they name when no
    override maps them: a warning says so when one is not on this machine (its consumer
    group would commit offsets there), none when all are local."""
    extra = """      Events:
        Remote:
          Type: SelfManagedKafka
          Properties:
            KafkaBootstrapServers: [kafka-1.internal:9092, localhost:9092]
            Topics: [orders]
        Local:
          Type: SelfManagedKafka
          Properties:
            KafkaBootstrapServers: [localhost:9092, 127.0.0.1:9093]
            Topics: [orders]
"""
    result = translate(tmp_path, extra)
    found = triggers(result)
    assert found["Fn-Remote"]["source"]["bootstrap_servers"] == [
        "kafka-1.internal:9092",
        "localhost:9092",
    ]
    notes = warnings(result)
    remote = notes["Resources.Fn.Properties.Events.Remote.Properties"]
    assert "reading the Kafka at kafka-1.internal:9092 named here" in remote  # not localhost
    assert "Resources.Fn.Properties.Events.Local.Properties" not in notes
    from triggerd.imports.serverless import translate_serverless

    path = tmp_path / "serverless.yml"
    path.write_text(
        "service: k\nprovider: {name: aws, runtime: python3.11}\nfunctions:\n"
        "  f:\n    handler: app.handler\n    events:\n"
        "      - kafka: {topic: t, bootstrapServers: [b-1.prod:9092]}\n"
        "      - kafka: {topic: t, bootstrapServers: [localhost:9092]}\n"
    )
    sls_notes = warnings(translate_serverless(path, overrides=None, options={}, environ={}))
    assert "b-1.prod:9092" in sls_notes["functions.f.events[0].kafka.bootstrapServers"]
    assert "functions.f.events[1].kafka.bootstrapServers" not in sls_notes


def test_s3_event_types_a_directory_never_has_are_warnings(tmp_path: Path) -> None:
    """A bucket mapped to a directory: an S3 event type with no directory change (tagging,
    restore) is a warning, and a trigger left with none is disabled; they were dropped, and
    the trigger then delivered every file change to a function that asked for tagging."""
    from triggerd.imports.common import Overrides
    from triggerd.imports.serverless import translate_serverless

    (tmp_path / "template.yaml").write_text(
        FUNCTION.format(
            extra="""  Bucket:
    Type: AWS::S3::Bucket
  Fn2:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: src
      Events:
        Tag: {Type: S3, Properties: {Bucket: !Ref Bucket, Events: "s3:ObjectTagging:*"}}
        Mixed:
          Type: S3
          Properties:
            Bucket: !Ref Bucket
            Events: ["s3:ObjectCreated:Put", "s3:ObjectRestore:*"]
"""
        )
    )
    (tmp_path / "src").mkdir()
    overrides = Overrides.model_validate(
        {
            "resources": {
                "Bucket": {"type": "directory", "path": "in"},
                "photos": {"type": "directory", "path": "in"},
            }
        }
    )
    result = translate_sam(tmp_path / "template.yaml", overrides=overrides, parameters={})
    found = triggers(result)
    assert found["Fn2-Tag"]["enabled"] is False
    assert "enabled" not in found["Fn2-Mixed"]
    assert found["Fn2-Mixed"]["source"]["events"] == ["created", "modified"]
    notes = [str(w) for w in result.warnings]
    assert any("s3:ObjectTagging:*: a directory has no such change" in n for n in notes)
    assert any("s3:ObjectRestore:*: a directory has no such change" in n for n in notes)
    path = tmp_path / "serverless.yml"
    path.write_text(SLS.replace('event: "s3:ObjectCreated:*"', 'event: "s3:ObjectTagging:*"'))
    sls_result = translate_serverless(path, overrides=overrides, options={}, environ={})
    s3 = triggers(sls_result)["worker-s3-2"]
    assert s3["enabled"] is False
    assert (
        "a directory has no such change"
        in warnings(sls_result)["functions.worker.events[2].s3.event"]
    )


def test_language_extensions_and_unknown_intrinsics() -> None:
    tpl = Template.create({"Resources": {}}, {})
    assert tpl.resolve({"Fn::ToJsonString": {"a": [1, {"Ref": "AWS::Region"}]}}) == (
        '{"a":[1,"us-east-1"]}'
    )
    assert tpl.resolve({"Fn::Length": [1, 2, {"Ref": "AWS::NoValue"}]}) == 2
    with pytest.raises(Unresolved, match="Fn::Length"):
        tpl.resolve({"Fn::Length": "abc"})
    with pytest.raises(Unresolved, match="Fn::ForEach::X is not an intrinsic"):
        tpl.resolve({"Fn::ForEach::X": ["x", ["a"], {}]})
    with pytest.raises(Unresolved, match="Fn::Cidr"):
        tpl.resolve({"k": {"Fn::Cidr": ["10.0.0.0/16", 2, 8]}})


def test_an_unknown_intrinsic_is_a_warning_naming_where(tmp_path: Path) -> None:
    extra = """      Environment:
        Variables:
          JSON: !ToJsonString {a: 1}
          COUNT: {"Fn::Length": [a, b]}
          CIDR: !Cidr [10.0.0.0/16, 2, 8]
"""
    result = translate(tmp_path, extra)
    env = result.config["functions"]["Fn"].get("environment", {})
    assert "CIDR" not in str(env)
    assert "Fn::Cidr" in str(result.warnings)
    assert "Resources.Fn.Properties.Environment" in str([w.where for w in result.warnings])


def test_stack_id_and_notification_arns() -> None:
    tpl = Template.create({"Resources": {}}, {"AWS::StackName": "s"})
    stack = tpl.resolve({"Ref": "AWS::StackId"})
    assert stack.startswith("arn:aws:cloudformation:us-east-1:123456789012:stack/s/")
    assert tpl.resolve({"Ref": "AWS::NotificationARNs"}) == []
    given = Template.create({"Resources": {}}, {"AWS::NotificationARNs": "arn:a,arn:b"})
    assert given.resolve({"Fn::Select": [1, {"Ref": "AWS::NotificationARNs"}]}) == "arn:b"
    assert not given.problems


def test_schedule_retry_policy_is_delivery_retries(tmp_path: Path) -> None:
    extra = """      EventInvokeConfig: {MaximumRetryAttempts: 1}
      Events:
        Tick:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(1 minute)
            RetryPolicy: {MaximumRetryAttempts: 0}
            DeadLetterConfig: {Type: SQS}
"""
    result = translate(tmp_path, extra)
    tick = triggers(result)["Fn-Tick"]
    assert tick["maximum_retry_attempts"] == 1  # EventInvokeConfig's, not the rule's 0
    assert "on_failure" not in tick
    notes = warnings(result)
    where = "Resources.Fn.Properties.Events.Tick.Properties"
    assert "delivery retries are not simulated" in notes[f"{where}.RetryPolicy"]
    assert "delivery retries are not simulated" in notes[f"{where}.DeadLetterConfig"]


def test_warnings_cannot_inject_config(tmp_path: Path) -> None:
    assert printable("a\nb\r\x1b[2J\u2028c\td") == "a\\nb\\r\\x1b[2J\\u2028c\\td"
    extra = """      Events:
        "Q\\n[functions.Evil]\\nruntime = 'python3.11'":
          Type: SQS
          Properties: {Queue: !GetAtt Work.Arn, Bogus: 1}
"""
    path = tmp_path / "template.yaml"
    path.write_text(FUNCTION.format(extra=extra))
    (tmp_path / "src").mkdir()
    result = CliRunner().invoke(main, ["import", "sam", str(path)])
    assert result.exit_code == 0, result.output
    comments = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert any("\\n[functions.Evil]" in line for line in comments)
    assert "Evil" not in tomllib.loads(result.stdout).get("functions", {})
    assert "\n[functions.Evil]" not in result.stderr


def test_parameter_values_are_shell_quoted() -> None:
    assert pairs(['Env="a b" Other=c', "Quoted='x y'"], "--x") == {
        "Env": "a b",
        "Other": "c",
        "Quoted": "x y",
    }
    with pytest.raises(Exception, match="closing quotation"):
        pairs(['Env="a'], "--x")


def test_api_globals_merge_maps_and_warn_what_is_left(tmp_path: Path) -> None:
    text = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Api:
    Variables: {A: global, B: global}
    TracingEnabled: true
    Auth: {ApiKeyRequired: true}
Resources:
  Rest:
    Type: AWS::Serverless::Api
    Properties:
      StageName: v1
      Variables: {B: own}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: src
      Events:
        Page:
          Type: Api
          Properties: {RestApiId: !Ref Rest, Path: /page, Method: get}
"""
    path = tmp_path / "template.yaml"
    path.write_text(text)
    (tmp_path / "src").mkdir()
    result = translate_sam(path, overrides=None, parameters={})
    source = triggers(result)["Fn-Page"]["source"]
    assert source["stage_variables"] == {"A": "global", "B": "own"}
    notes = warnings(result)
    assert "not carried over" in notes["Globals.Api.TracingEnabled"]
    assert "not carried over" in notes["Globals.Api.Auth"]


SLS = """
service: review
frameworkVersion: '3'
provider: {name: aws, runtime: python3.11, region: eu-west-1}
functions:
  worker:
    handler: app.handler
    events:
      - sqs: arn:aws:sqs:eu-west-1:123456789012:jobs
      - stream:
          arn: arn:aws:kinesis:eu-west-1:123456789012:stream/clicks
          destinations: {onFailure: arn:aws:sqs:eu-west-1:123456789012:dlq}
      - s3: {bucket: photos, event: "s3:ObjectCreated:*", rules: [{suffix: .jpg}]}
"""


def sls(tmp_path: Path, overrides: Any) -> Translation:
    from triggerd.imports.serverless import translate_serverless

    path = tmp_path / "serverless.yml"
    path.write_text(SLS)
    return translate_serverless(path, overrides=overrides, options={}, environ={})


def test_serverless_never_reads_unmapped_aws_resources(tmp_path: Path) -> None:
    from triggerd.imports.common import Overrides

    bare = sls(tmp_path, None)
    found = triggers(bare)
    for name in ("worker-sqs-0", "worker-stream-1", "worker-s3-2"):
        assert found[name]["enabled"] is False, name
    assert found["worker-stream-1"]["on_failure"] == {
        "type": "file",
        "path": "triggerd-dlq/worker-stream-1.jsonl",
    }
    notes = warnings(bare)
    assert "the trigger is disabled" in notes["functions.worker.events[0].sqs"]
    assert "triggerd-dlq" in notes["functions.worker.events[1].stream.destinations.onFailure"]
    emulated = sls(
        tmp_path,
        Overrides.model_validate(
            {
                "endpoint_url": "http://127.0.0.1:5000",
                "resources": {"photos": {"type": "directory", "path": "in"}},
                "triggers": {"worker-sqs-0": {"source": {"wait_time_s": 1}, "batch_size": 2}},
            }
        ),
    )
    found = triggers(emulated)
    assert all("enabled" not in t for t in found.values())
    queue = found["worker-sqs-0"]
    # The override's source keys merge into the translated source, as SAM's do.
    assert queue["source"]["queue_url"].endswith("/jobs") and queue["source"]["wait_time_s"] == 1
    assert queue["batch_size"] == 2
    assert found["worker-stream-1"]["on_failure"]["type"] == "sqs"
    assert found["worker-s3-2"]["source"]["include"] == ["*.jpg", "*/**/*.jpg"]


def test_serverless_entries_that_name_no_endpoint_never_point_a_trigger_at_aws(
    tmp_path: Path,
) -> None:
    """Entries that only tune an AWS source in a file with no endpoint_url: the triggers are
    disabled (they would read AWS) and the on-failure queue is a file; a queue_url on a local
    host names its endpoint; the file's endpoint_url is used when it has one."""
    from triggerd.imports.common import Overrides

    entries: dict[str, Any] = {
        "jobs": {"visibility_timeout_s": 60},
        "clicks": {"poll_interval_s": 0.1},
        "photos": {"poll_interval_s": 1},
        "dlq": {"type": "sqs"},
    }
    found = triggers(sls(tmp_path, Overrides.model_validate({"resources": entries})))
    for name in ("worker-sqs-0", "worker-stream-1", "worker-s3-2"):
        assert found[name]["enabled"] is False, name
        assert "endpoint_url" not in found[name]["source"], name
    assert found["worker-stream-1"]["on_failure"]["type"] == "file"
    local = {**entries, "jobs": {"queue_url": "http://127.0.0.1:9324/000000000000/jobs"}}
    found = triggers(sls(tmp_path, Overrides.model_validate({"resources": local})))
    assert "enabled" not in found["worker-sqs-0"]
    assert found["worker-sqs-0"]["source"]["queue_url"].startswith("http://127.0.0.1:9324/")
    emulated = Overrides.model_validate(
        {"endpoint_url": "http://127.0.0.1:5000", "region": "eu-west-1", "resources": entries}
    )
    found = triggers(sls(tmp_path, emulated))
    for name in ("worker-sqs-0", "worker-stream-1", "worker-s3-2"):
        assert "enabled" not in found[name], name
        source = found[name]["source"]
        assert (source["endpoint_url"], source["region"]) == ("http://127.0.0.1:5000", "eu-west-1")
    assert found["worker-s3-2"]["source"]["poll_interval_s"] == 1
    assert found["worker-stream-1"]["on_failure"]["endpoint_url"] == "http://127.0.0.1:5000"


def test_serverless_queue_mapped_to_rabbitmq_reads_the_queue_of_its_name(tmp_path: Path) -> None:
    """An sqs event's queue and an on-failure queue mapped to RabbitMQ with only a connection
    read (and send to) the queue of the same name, as SAM's side does; they had no queue."""
    from triggerd.config.load import validate_data
    from triggerd.config.plugins import Registry
    from triggerd.imports.common import Overrides

    url = "amqp://guest:guest@127.0.0.1:5672/"
    entries = {"jobs": {"type": "rabbitmq", "url": url}, "dlq": {"type": "rabbitmq", "url": url}}
    result = sls(tmp_path, Overrides.model_validate({"resources": entries}))
    found = triggers(result)
    assert found["worker-sqs-0"]["source"] == {"type": "rabbitmq", "queue": "jobs", "url": url}
    on_failure = found["worker-stream-1"]["on_failure"]
    assert on_failure == {"type": "rabbitmq", "routing_key": "dlq", "url": url}
    validate_data(result.config, Registry.discover(), base_dir=tmp_path)


def test_a_tumbling_window_keeps_one_reader_per_shard(tmp_path: Path) -> None:
    from triggerd.config.load import validate_data
    from triggerd.config.plugins import Registry
    from triggerd.imports.common import Overrides
    from triggerd.imports.serverless import translate_serverless

    extra = """      Events:
        Clicks:
          Type: Kinesis
          Properties:
            Stream: arn:aws:kinesis:us-east-1:123456789012:stream/clicks
            StartingPosition: LATEST
            TumblingWindowInSeconds: 60
            ParallelizationFactor: 4
"""
    sam = translate(tmp_path, extra)
    source = triggers(sam)["Fn-Clicks"]["source"]
    assert (source["tumbling_window_s"], source["parallelization_factor"]) == (60, 1)
    where = "Resources.Fn.Properties.Events.Clicks.Properties.ParallelizationFactor"
    assert "4 with a tumbling window" in warnings(sam)[where]
    validate_data(sam.config, Registry.discover(), base_dir=tmp_path)
    path = tmp_path / "serverless.yml"
    path.write_text(
        """
service: w
provider: {name: aws, runtime: python3.11}
functions:
  f:
    handler: app.handler
    events:
      - stream:
          arn: arn:aws:kinesis:us-east-1:123456789012:stream/clicks
          tumblingWindowInSeconds: 60
          parallelizationFactor: 4
"""
    )
    overrides = Overrides.model_validate({"endpoint_url": "http://127.0.0.1:5000"})
    sls_ = translate_serverless(path, overrides=overrides, options={}, environ={})
    source = triggers(sls_)["f-stream-0"]["source"]
    assert (source["tumbling_window_s"], source["parallelization_factor"]) == (60, 1)
    assert (
        "4 with a tumbling window"
        in warnings(sls_)["functions.f.events[0].stream.parallelizationFactor"]
    )
    validate_data(sls_.config, Registry.discover(), base_dir=tmp_path)


def test_serverless_functions_given_another_backend(tmp_path: Path) -> None:
    from triggerd.config.load import validate_data
    from triggerd.config.plugins import Registry
    from triggerd.imports.common import Overrides
    from triggerd.imports.serverless import translate_serverless

    path = tmp_path / "serverless.yml"
    path.write_text(
        """
service: b
provider: {name: aws, runtime: python3.11}
functions:
  container:
    image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:latest
    timeout: 9
  java:
    handler: com.example.Handler
    runtime: java21
    environment: {A: b}
  skipped:
    image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:latest
"""
    )
    http = {"backend": "http", "url": "http://127.0.0.1:9/x"}
    overrides = Overrides.model_validate(
        {"functions": {"container": {"settings": http}, "java": {"settings": http}}}
    )
    result = translate_serverless(path, overrides=overrides, options={}, environ={})
    functions = result.config["functions"]
    assert functions["container"] == {**http, "timeout_s": 9.0}
    assert functions["java"]["backend"] == "http"
    assert not {"runtime", "handler", "code", "environment"} & set(functions["java"])
    assert "skipped" not in functions
    notes = warnings(result)
    assert "environment: the http backend has no such setting" in str(result.warnings)
    assert "give it a backend" in notes["functions.skipped.image"]
    validate_data(result.config, Registry.discover(), base_dir=tmp_path)
