"""SNS and EventBridge events of SAM templates and serverless.yml files as triggerd's `[sns]`
topics and `[[event_buses]]` rules, validated by the real config loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.imports.common import Translation
from triggerd.imports.sam import translate_sam
from triggerd.imports.serverless import translate_serverless

pytest.importorskip("cfnlint")

SAM = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Kind: {Type: String, Default: big}
Resources:
  Orders:
    Type: AWS::SNS::Topic
    Properties: {TopicName: orders}
  Ledger:
    Type: AWS::SNS::Topic
    Properties: {TopicName: ledger.fifo, FifoTopic: true, ContentBasedDeduplication: true}
  Bus:
    Type: AWS::Events::EventBus
    Properties: {Name: shop}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: src
      EventInvokeConfig: {MaximumRetryAttempts: 1, MaximumEventAgeInSeconds: 120}
      Events:
        Big:
          Type: SNS
          Properties:
            Topic: !Ref Orders
            FilterPolicy: {kind: [!Ref Kind]}
            FilterPolicyScope: MessageAttributes
            SqsSubscription: true
        Body:
          Type: SNS
          Properties:
            Topic: arn:aws:sns:us-east-1:123456789012:orders
            FilterPolicy: {state: [{prefix: ship}]}
            FilterPolicyScope: MessageBody
        Book:
          Type: SNS
          Properties: {Topic: !Ref Ledger}
        Placed:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Bus
            Pattern: {source: [shop], detail-type: [OrderPlaced]}
            InputTransformer:
              InputPathsMap: {id: $.detail.id}
              InputTemplate: '{"order": <id>}'
            RetryPolicy: {MaximumRetryAttempts: 3}
            Target: {Id: placed-target}
            RuleName: placed
        Legacy:
          Type: CloudWatchEvent
          Properties:
            Pattern: {source: [aws.ec2]}
            InputPath: $.detail
            State: DISABLED
"""


def translate(tmp_path: Path) -> Translation:
    path = tmp_path / "template.yaml"
    path.write_text(SAM)
    (tmp_path / "src").mkdir(exist_ok=True)
    return translate_sam(path, overrides=None, parameters={})


def test_sam_sns_and_eventbridge_events(tmp_path: Path) -> None:
    result = translate(tmp_path)
    assert result.config["triggers"] == []
    topics = {t["name"]: t for t in result.config["sns"]["topics"]}
    assert topics["orders"]["subscriptions"] == [
        {
            "function": "Fn",
            "filter_policy": {"kind": ["big"]},
            "filter_policy_scope": "MessageAttributes",
        },
        {
            "function": "Fn",
            "filter_policy": {"state": [{"prefix": "ship"}]},
            "filter_policy_scope": "MessageBody",
        },
    ]
    assert topics["ledger.fifo"] == {
        "name": "ledger.fifo",
        "fifo": True,
        "content_based_deduplication": True,
        "subscriptions": [{"function": "Fn"}],
    }
    buses = {b["name"]: b for b in result.config["event_buses"]}
    assert buses["shop"]["rules"] == [
        {
            "name": "placed",
            "event_pattern": {"source": ["shop"], "detail-type": ["OrderPlaced"]},
            "targets": [
                {
                    "function": "Fn",
                    "id": "placed-target",
                    "input_transformer": {
                        "input_paths_map": {"id": "$.detail.id"},
                        "input_template": '{"order": <id>}',
                    },
                }
            ],
        }
    ]
    assert buses["default"]["rules"] == [
        {
            "name": "Fn-Legacy",
            "event_pattern": {"source": ["aws.ec2"]},
            "targets": [{"function": "Fn", "input_path": "$.detail"}],
            "state": "DISABLED",
        }
    ]
    notes = {w.where: w.message for w in result.warnings}
    events = "Resources.Fn.Properties.Events"
    assert "without the SQS queue" in notes[f"{events}.Big.Properties.SqsSubscription"]
    assert "not simulated" in notes[f"{events}.Placed.Properties.RetryPolicy"]
    assert "127.0.0.1:9071" in notes["daemon.control_listen"]
    # What the topics and buses deliver is retried as EventInvokeConfig says.
    assert result.config["async_invocation"] == {
        "Fn": {"maximum_retry_attempts": 1, "maximum_event_age_s": 120.0}
    }
    cfg = validate_data(result.config, Registry.discover(), base_dir=tmp_path)
    assert cfg.sns is not None and len(cfg.sns.topics) == 2
    assert [b.name for b in cfg.event_buses] == ["shop", "default"]
    assert cfg.async_invocation_map["Fn"].maximum_retry_attempts == 1


def test_sam_fanout_without_a_control_listener_is_named(tmp_path: Path) -> None:
    result = translate(tmp_path)
    result.config["daemon"]["control_listen"] = ""
    with pytest.raises(Exception, match="control_listen"):
        validate_data(result.config, Registry.discover(), base_dir=tmp_path)


SLS = """
service: shop
provider: {name: aws, runtime: python3.11, region: eu-west-1}
functions:
  worker:
    handler: app.handler
    maximumRetryAttempts: 0
    destinations: {onFailure: arn:aws:sqs:eu-west-1:123456789012:failed}
    events:
      - sns: arn:aws:sns:eu-west-1:123456789012:orders
      - sns:
          topicName: audits
          filterPolicy: {kind: [big]}
          filterPolicyScope: MessageAttributes
      - eventBridge:
          eventBus: arn:aws:events:eu-west-1:123456789012:event-bus/shop
          pattern: {source: [shop]}
          inputTransformer:
            inputPathsMap: {id: $.detail.id}
            inputTemplate: '{"order": <id>}'
      - eventBridge:
          pattern: {source: [billing]}
          input: {fixed: true}
          enabled: false
      - eventBridge:
          schedule: rate(10 minutes)
          input: {from: bridge}
"""


def test_serverless_sns_and_eventbridge_events(tmp_path: Path) -> None:
    path = tmp_path / "serverless.yml"
    path.write_text(SLS)
    result = translate_serverless(path, overrides=None, options={}, environ={})
    topics = {t["name"]: t["subscriptions"] for t in result.config["sns"]["topics"]}
    assert topics == {
        "orders": [{"function": "worker"}],
        "audits": [
            {
                "function": "worker",
                "filter_policy": {"kind": ["big"]},
                "filter_policy_scope": "MessageAttributes",
            }
        ],
    }
    buses: dict[str, Any] = {b["name"]: b["rules"] for b in result.config["event_buses"]}
    assert buses["shop"][0]["name"] == "worker-rule-3"
    assert buses["shop"][0]["targets"][0]["input_transformer"]["input_paths_map"] == {
        "id": "$.detail.id"
    }
    assert buses["default"] == [
        {
            "name": "worker-rule-4",
            "event_pattern": {"source": ["billing"]},
            "targets": [{"function": "worker", "input": {"fixed": True}}],
            "state": "DISABLED",
        }
    ]
    (schedule,) = result.config["triggers"]  # a rule with a schedule stays a schedule
    assert schedule["source"]["type"] == "schedule"
    assert schedule["source"]["input"] == {"from": "bridge"}
    # Deliveries take the function's async settings; no local queue: failures to a file.
    assert result.config["async_invocation"] == {
        "worker": {
            "maximum_retry_attempts": 0,
            "on_failure": {"type": "file", "path": "triggerd-dlq/worker.jsonl"},
        }
    }
    cfg = validate_data(result.config, Registry.discover(), base_dir=tmp_path)
    assert cfg.sns is not None and len(cfg.sns.topics) == 2
