"""What a serverless.yml refers to, and where the overrides file says it lives locally.

An event names its queue, stream, bucket, broker or destination by ARN, by name, or through a
CloudFormation intrinsic (`Fn::GetAtt: [MyQueue, Arn]`, `!Ref MyQueue`, `!ImportValue x`).
`reference` turns each into a `Ref` (ARN, name, logical id, whichever are known: a logical id
is looked up in the file's `resources.Resources` for the name it declares), and the
translator asks the overrides for each of those keys in turn."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from triggerd.imports.serverless_vars import Unresolved
from triggerd.imports.serverless_yaml import Intrinsic, as_intrinsic

__all__ = [
    "KINDS",
    "FunctionOverrideLike",
    "OverridesLike",
    "Ref",
    "ResourceOverrideLike",
    "reference",
]


class ResourceOverrideLike(Protocol):
    """One entry of the overrides file's `resources` (`common.ResourceOverride`)."""

    @property
    def type(self) -> str | None:
        """The triggerd source type to read instead (None: the translator's)."""

    @property
    def options(self) -> dict[str, Any]:
        """That source's options, set over the translator's."""


class FunctionOverrideLike(Protocol):
    """One entry of the overrides file's `functions` (`common.FunctionOverride`)."""

    @property
    def environment(self) -> Mapping[str, str]: ...

    @property
    def settings(self) -> Mapping[str, Any]: ...


class OverridesLike(Protocol):
    """What the translator reads of the overrides file (`common.Overrides`): resources by
    logical id, name or ARN; the AWS endpoint and region of the sources without an entry;
    per-function environment and settings; keys set over the daemon table and over triggers
    by name."""

    @property
    def daemon(self) -> Mapping[str, Any]: ...

    @property
    def endpoint_url(self) -> str | None: ...

    @property
    def region(self) -> str | None: ...

    @property
    def functions(self) -> Mapping[str, FunctionOverrideLike]: ...

    @property
    def triggers(self) -> Mapping[str, Mapping[str, Any]]: ...

    def resource(self, *keys: str | None) -> ResourceOverrideLike | None:
        """The entry of the first of `keys` that has one."""


#: Resource kinds: the CloudFormation type that declares one, the property holding its name,
#: and how its ARN is written.
KINDS: dict[str, tuple[str, str, str]] = {
    "queue": ("AWS::SQS::Queue", "QueueName", "arn:aws:sqs:{region}:{account}:{name}"),
    "kinesis": ("AWS::Kinesis::Stream", "Name", "arn:aws:kinesis:{region}:{account}:stream/{name}"),
    "dynamodb": ("AWS::DynamoDB::Table", "TableName", ""),
    "topic": ("AWS::SNS::Topic", "TopicName", "arn:aws:sns:{region}:{account}:{name}"),
    "bucket": ("AWS::S3::Bucket", "BucketName", "arn:aws:s3:::{name}"),
    "broker": ("AWS::AmazonMQ::Broker", "BrokerName", ""),
    "kafka": ("AWS::MSK::Cluster", "ClusterName", ""),
    "any": ("", "", ""),
}

_ARN = re.compile(
    r"^arn:aws[a-z-]*:(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):"
    r"(?P<account>\d*):(?P<resource>.+)$"
)


@dataclass(frozen=True)
class Ref:
    """A resource an event names: whichever of its ARN, name and logical id are known."""

    text: str
    arn: str | None = None
    name: str | None = None
    logical_id: str | None = None

    def keys(self) -> list[str]:
        """The keys to look the resource up by in the overrides, most specific first."""
        return [k for k in (self.logical_id, self.arn, self.name) if k]


def arn_parts(arn: str) -> tuple[str, str, str, str] | None:
    """(service, region, account, resource) of an ARN."""
    m = _ARN.match(arn)
    return (m["service"], m["region"], m["account"], m["resource"]) if m else None


def _name_in_arn(arn: str) -> str | None:
    parts = arn_parts(arn)
    if parts is None:
        return None
    service, _, _, resource = parts
    if service == "dynamodb":
        return resource.split("/")[1] if resource.startswith("table/") else None
    if service == "kinesis":
        return resource.removeprefix("stream/").split("/")[0]
    if service == "mq":
        return resource.split(":")[1] if resource.startswith("broker:") else None
    return resource.split(":")[-1].split("/")[-1] or None


@dataclass
class RefContext:
    """What `reference` needs of the translation."""

    resources: Mapping[str, Any]
    region: str
    account: str
    warn: Callable[[str, str], None]


def reference(value: Any, kind: str, where: str, ctx: RefContext) -> Ref | None:
    """The resource `value` names, or None (with a warning) when it names none that can be
    known without AWS."""
    if isinstance(value, Unresolved):
        return None  # the variable's warning names it already
    if isinstance(value, str) and value:
        if value.startswith("arn:"):
            return Ref(value, arn=value, name=_name_in_arn(value))
        return Ref(value, name=value)
    intrinsic = as_intrinsic(value)
    if intrinsic is None:
        ctx.warn(where, f"expected an ARN or a name, not {value!r}")
        return None
    text = _simple(intrinsic, ctx)
    if text is not None:
        return reference(text, kind, where, ctx)
    logical = _logical_id(intrinsic)
    if logical is None:
        ctx.warn(
            where,
            f"{intrinsic} cannot be resolved without AWS: give its ARN, or map it in the "
            "overrides file",
        )
        return None
    return _resource_ref(intrinsic, logical, kind, ctx)


def _logical_id(intrinsic: Intrinsic) -> str | None:
    if intrinsic.name == "Ref" and isinstance(intrinsic.args, str):
        return intrinsic.args
    args = intrinsic.args
    if intrinsic.name == "Fn::GetAtt" and isinstance(args, list) and args:
        return str(args[0])
    return None


def _resource_ref(intrinsic: Intrinsic, logical: str, kind: str, ctx: RefContext) -> Ref:
    """A resource of this file's `resources` section, by logical id: its name (when the
    template sets it) and ARN."""
    rtype, name_key, arn_form = KINDS.get(kind, KINDS["any"])
    resource = ctx.resources.get(logical)
    name: str | None = None
    if (
        isinstance(resource, dict)
        and isinstance(resource.get("Properties"), dict)
        and (not rtype or resource.get("Type") == rtype)
    ):
        declared = resource["Properties"].get(name_key) if name_key else None
        name = declared if isinstance(declared, str) and declared else None
    arn = None
    if name and arn_form:
        arn = arn_form.format(region=ctx.region, account=ctx.account, name=name)
    return Ref(str(intrinsic), arn=arn, name=name, logical_id=logical)


_PSEUDO = re.compile(r"\$\{(AWS::[A-Za-z]+)\}")


def _simple(intrinsic: Intrinsic, ctx: RefContext) -> str | None:
    """Text the intrinsic computes from what is known here: `Fn::Sub` with pseudo parameters
    only, `Fn::Join` of plain strings; else None."""
    pseudo = {
        "AWS::Region": ctx.region,
        "AWS::AccountId": ctx.account,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    args = intrinsic.args
    if intrinsic.name == "Fn::Sub" and isinstance(args, str):
        text = _PSEUDO.sub(lambda m: pseudo.get(m.group(1), m.group(0)), args)
        return None if "${" in text else text
    if intrinsic.name == "Fn::Join" and isinstance(args, list) and len(args) == 2:
        sep, items = args
        if isinstance(sep, str) and isinstance(items, list):
            parts = [
                _simple(i, ctx) if isinstance(i, Intrinsic) else i
                for i in (as_intrinsic(x) or x for x in items)
            ]
            if all(isinstance(p, str) for p in parts):
                return sep.join(str(p) for p in parts)
    if intrinsic.name == "Ref" and args in pseudo:
        return pseudo[args]
    return None
