"""The s3 source's config: mode keys, bucket names, event selections, rules, secrets, and the
messages a broken config file gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.types import ConfigError
from triggerd_s3 import S3SourceConfig, plugin, sample_event


def cfg(**options: Any) -> S3SourceConfig:
    return S3SourceConfig.model_validate({"type": "s3", "bucket": "my-bucket", **options})


def daemon_config(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "functions": {"fn": {"backend": "local", "handler": "app.handler", "code": "."}},
        "triggers": [{"function": "fn", "source": {"type": "s3", **source}}],
    }


def problems_of(source: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        validate_data(daemon_config(source), Registry.discover(), base_dir=tmp_path)
    return "\n".join(info.value.problems)


def test_defaults_are_poll_mode_latest_and_created_plus_removed_events() -> None:
    c = cfg()
    assert (c.mode, c.starting_position, c.poll_interval_s, c.page_size) == (
        "poll",
        "LATEST",
        60.0,
        1000,
    )
    assert c.events == ["ObjectCreated:*", "ObjectRemoved:*"]
    assert S3SourceConfig.invocation == "async"


def test_notifications_mode_without_queue_url_names_the_missing_key(tmp_path: Path) -> None:
    text = problems_of({"bucket": "my-bucket", "mode": "notifications"}, tmp_path)
    assert "queue_url is required in notifications mode" in text


def test_queue_url_in_poll_mode_is_rejected() -> None:
    with pytest.raises(ValidationError, match="only used in notifications mode"):
        cfg(queue_url="http://localhost/q")


@pytest.mark.parametrize("name", ["ab", "My_Bucket", "-start", "a..b", "192.168.1.1", "x" * 64])
def test_bad_bucket_names_are_rejected_with_the_naming_rule(name: str, tmp_path: Path) -> None:
    text = problems_of({"bucket": name}, tmp_path)
    assert "triggers.0.source.bucket" in text and "not a valid S3 bucket name" in text


def test_unknown_event_type_is_rejected_with_examples() -> None:
    with pytest.raises(ValidationError, match="unknown S3 event type 's3:ObjectMade:\\*'"):
        cfg(events=["s3:ObjectMade:*"])


def test_event_selection_follows_notification_config_wildcards() -> None:
    c = cfg(events=["s3:ObjectCreated:*", "ObjectRemoved:Delete"])
    assert c.event_selected("ObjectCreated:Put")
    assert c.event_selected("ObjectCreated:CompleteMultipartUpload")
    assert c.event_selected("ObjectRemoved:Delete")
    assert not c.event_selected("ObjectRemoved:DeleteMarkerCreated")
    assert not c.event_selected("ObjectTagging:Put")


def test_prefix_and_suffix_rules_both_apply_to_the_raw_key() -> None:
    c = cfg(prefix="images/", suffix=".jpg")
    assert c.key_matches("images/a b.jpg")
    assert not c.key_matches("images/a.png")
    assert not c.key_matches("other/a.jpg")


def test_endpoint_url_must_be_http() -> None:
    with pytest.raises(ValidationError, match="not an http:// or https:// URL"):
        cfg(endpoint_url="localhost:9000")


def test_access_key_without_secret_is_rejected() -> None:
    with pytest.raises(ValidationError, match="go together"):
        cfg(aws_access_key_id="AKID")


def test_secrets_never_appear_in_repr_dump_or_errors(tmp_path: Path) -> None:
    c = cfg(aws_access_key_id="AKIDVISIBLE", aws_secret_access_key="s3cr3t-value")
    assert "s3cr3t-value" not in repr(c)
    assert "s3cr3t-value" not in str(c.model_dump())
    assert "s3cr3t-value" not in c.model_dump_json()
    assert c.secrets() == ["AKIDVISIBLE", "s3cr3t-value"]
    text = problems_of(
        {"bucket": "BAD", "aws_access_key_id": "AKID", "aws_secret_access_key": "s3cr3t-value"},
        tmp_path,
    )
    assert "s3cr3t-value" not in text


def test_unknown_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    text = problems_of({"bucket": "my-bucket", "sufix": ".jpg"}, tmp_path)
    assert "sufix: unknown key (did you mean 'suffix'?)" in text


def test_plugin_is_registered_under_s3() -> None:
    assert Registry.discover().source("s3") is plugin


def test_sample_event_is_an_s3_put_with_the_encoded_key() -> None:
    event = sample_event({"bucket": "photos", "key": "a b+c.jpg"})
    [record] = event["Records"]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == "photos"
    assert record["s3"]["object"]["key"] == "a+b%2Bc.jpg"
    with pytest.raises(ValueError, match="unknown option"):
        sample_event({"colour": "red"})


async def test_client_uses_path_style_and_the_configured_credentials() -> None:
    from contextlib import AsyncExitStack

    from triggerd_s3.client import open_client

    c = cfg(
        path_style=True,
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="AKIDCONFIG",
        aws_secret_access_key="from-config",
    )
    async with AsyncExitStack() as stack:
        client = await open_client(stack, "s3", c, region="eu-west-1", endpoint_url=c.endpoint_url)
        assert client.meta.config.s3["addressing_style"] == "path"
        assert client.meta.region_name == "eu-west-1"
        credentials = client._get_credentials()
        assert credentials.access_key == "AKIDCONFIG"


async def test_client_without_keys_takes_the_standard_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from contextlib import AsyncExitStack

    from triggerd_s3.client import open_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    c = cfg(endpoint_url="http://127.0.0.1:1")
    async with AsyncExitStack() as stack:
        client = await open_client(stack, "s3", c, region="us-east-1", endpoint_url=c.endpoint_url)
        assert client.meta.config.s3["addressing_style"] == "auto"
        credentials = client._get_credentials()
        assert credentials.access_key == "AKIDFROMENV"
