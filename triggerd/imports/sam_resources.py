"""The AWS resources a SAM event or destination names, mapped to local ones: the overrides
file's entry for the resource (by logical id, name or ARN) first, else the file's default
AWS endpoint, else a sensible default with a warning.

The defaults (docs/sam.md, "Resources without an override"): the services that speak their
own protocol default to their usual local port (RabbitMQ on localhost:5672, Kafka on
localhost:9092); the AWS API services (SQS, S3, Kinesis, DynamoDB Streams) are read from
`endpoint_url` when the overrides file sets one (moto, LocalStack), else the trigger is written
disabled, so that nothing reads a real AWS resource by surprise; an on-failure destination with
no local equivalent becomes a file, so no failed event is lost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from triggerd.imports.common import (
    DLQ_DIR,
    Overrides,
    ResourceOverride,
    Translation,
    file_destination,
    warn_disabled,
    warn_local_broker,
    warn_remote_kafka,
)
from triggerd.imports.sam_template import Template, Unresolved

__all__ = ["DLQ_DIR", "Resource", "Resources", "resource"]


@dataclass(frozen=True)
class Resource:
    """A resource an event names: its logical id (when in the template), the resolved value
    (ARN, URL or name) and its short name (the ARN's last part)."""

    logical_id: str | None
    value: str

    @property
    def name(self) -> str:
        tail = self.value.rstrip("/").split(":")[-1].split("/")[-1]
        if "/stream/" in self.value:  # a table's stream ARN: the table
            tail = self.value.split(":table/")[-1].split("/")[0]
        if self.value.startswith("arn:") and ":stream/" in self.value:
            tail = self.value.split(":stream/")[-1]
        return tail

    def keys(self) -> tuple[str | None, ...]:
        return (self.logical_id, self.value, self.name)


def resource(tpl: Template, node: Any) -> Resource:
    """The resource `node` (a Ref, a GetAtt or a literal ARN) names; Unresolved if unknown."""
    logical_id = None
    if isinstance(node, dict) and len(node) == 1:
        ((key, arg),) = node.items()
        if key == "Ref" and isinstance(arg, str):
            logical_id = arg
        elif key == "Fn::GetAtt":
            target = arg.split(".", 1) if isinstance(arg, str) else arg
            if isinstance(target, list) and target:
                logical_id = str(target[0])
    if logical_id is not None and tpl.resource_type(logical_id) is None:
        logical_id = None
    value = tpl.resolve(node)
    if not isinstance(value, str):
        raise Unresolved(f"{value!r} does not name a resource")
    return Resource(logical_id, value)


class Resources:
    """Maps resources to source and destination tables, warning where it guessed."""

    def __init__(self, tpl: Template, out: Translation, overrides: Overrides) -> None:
        self.tpl = tpl
        self.out = out
        self.overrides = overrides
        #: Every name a resource was looked up by: the overrides' keys not among them name
        #: nothing (`unused`).
        self.seen: set[str] = set()

    def override(self, res: Resource) -> ResourceOverride | None:
        return self.lookup(res.keys())

    def lookup(self, keys: tuple[str | None, ...]) -> ResourceOverride | None:
        self.seen.update(k for k in keys if k)
        return self.overrides.resource(*keys)

    def warn_unused(self) -> None:
        for key in sorted(set(self.overrides.resources) - self.seen):
            self.out.warn(
                f"overrides.resources.{key}", "no event or destination of the template names it"
            )

    def aws_defaults(self) -> dict[str, Any]:
        if self.overrides.endpoint_url is None:
            return {}
        found: dict[str, Any] = {"endpoint_url": self.overrides.endpoint_url}
        if self.overrides.region:
            found["region"] = self.overrides.region
        return found

    def local_aws(self, opts: dict[str, Any]) -> dict[str, Any] | None:
        """An override's options for an AWS API source (S3, Kinesis, DynamoDB Streams) with
        the file's `endpoint_url` and `region` where the entry sets no endpoint; None when
        neither does, as the source would then read AWS itself."""
        if "endpoint_url" in opts:
            return opts
        defaults = self.aws_defaults()
        return {**defaults, **opts} if defaults else None

    def _no_endpoint(self, where: str, res: Resource) -> None:
        self.out.warn(
            where,
            f"the override of {res.logical_id or res.name} names no endpoint_url and the "
            "overrides file sets none: the trigger is disabled (it would read AWS)",
        )

    def queue_url(self, name: str, endpoint: str) -> str:
        return f"{endpoint.rstrip('/')}/{self.tpl.account}/{name}"

    def sqs_source(self, res: Resource, where: str) -> tuple[dict[str, Any], bool]:
        """The source table of an SQS event and whether the trigger can be enabled."""
        found = self.override(res)
        if found is not None:
            kind = found.type or "sqs"
            opts = found.options
            if kind == "sqs" and "queue_url" not in opts:
                endpoint = opts.get("endpoint_url") or self.overrides.endpoint_url
                if endpoint is None:
                    self.out.warn(
                        where,
                        f"the override of {res.logical_id or res.name} names no queue_url or "
                        "endpoint_url: the trigger is disabled (it would read AWS)",
                    )
                    return {"type": "sqs", "queue_url": self._aws_url(res), **opts}, False
                region = {} if "endpoint_url" in opts else self.aws_defaults()
                region.pop("endpoint_url", None)  # the queue URL's host is the endpoint
                opts = {"queue_url": self.queue_url(res.name, endpoint), **region, **opts}
            if kind == "rabbitmq":
                opts = {"queue": res.name, **opts}
            return {"type": kind, **opts}, True
        defaults = self.aws_defaults()
        if defaults:
            url = self.queue_url(res.name, defaults["endpoint_url"])
            return {"type": "sqs", "queue_url": url, **defaults}, True
        self._disabled(where, "queue", res)
        return {"type": "sqs", "queue_url": self._aws_url(res)}, False

    def _aws_url(self, res: Resource) -> str:
        if res.value.startswith("https://"):
            return res.value
        return f"https://sqs.{self.tpl.region}.amazonaws.com/{self.tpl.account}/{res.name}"

    def _disabled(self, where: str, what: str, res: Resource) -> None:
        warn_disabled(self.out.warn, where, what, res.logical_id or res.value)

    def stream_source(self, kind: str, res: Resource, where: str) -> tuple[dict[str, Any], bool]:
        """Kinesis (`kinesis`) or DynamoDB (`dynamodb_streams`) stream sources."""
        found = self.override(res)
        table = self.tpl.resource_type(res.logical_id or "") in (
            "AWS::DynamoDB::Table",
            "AWS::Serverless::SimpleTable",
        )
        # A table of the template is read by name (its latest stream): a local endpoint's
        # stream label is not the one the template's ARN would carry.
        stream = res.name if (table or kind == "kinesis") else res.value
        if found is not None:
            target = found.type or kind
            opts = found.options
            if target == "postgres":
                opts = {"tables": [res.name], **self._view_type(res), **opts}
            elif target in ("kinesis", "dynamodb_streams"):
                # An entry that only tunes the source (poll_interval_s...) is still read from
                # the file's endpoint, never from AWS by surprise.
                local = self.local_aws(opts)
                if local is None:
                    self._no_endpoint(where, res)
                    return {"type": target, "stream": stream, **opts}, False
                opts = {"stream": stream, **local}
            return {"type": target, **opts}, True
        defaults = self.aws_defaults()
        if defaults:
            return {"type": kind, "stream": stream, **defaults}, True
        self._disabled(where, "stream", res)
        return {"type": kind, "stream": res.value}, False

    def _view_type(self, res: Resource) -> dict[str, Any]:
        """The template table's `StreamSpecification.StreamViewType`, as the `postgres`
        source's `stream_view_type` (what each record carries)."""
        if res.logical_id is None:
            return {}
        declared = self.tpl.resources[res.logical_id].get("Properties") or {}
        spec = declared.get("StreamSpecification")
        if not isinstance(spec, dict) or "StreamViewType" not in spec:
            return {}
        try:
            view = self.tpl.resolve(spec["StreamViewType"])
        except Unresolved:  # the source's default (NEW_IMAGE) then
            return {}
        return {"stream_view_type": str(view)} if isinstance(view, str) else {}

    def bucket_source(self, res: Resource, where: str) -> tuple[dict[str, Any], bool]:
        found = self.override(res)
        if found is not None:
            target = found.type or "s3"
            opts = found.options
            if target == "s3":
                # As streams: an entry without endpoint_url reads the file's, never AWS.
                local = self.local_aws(opts)
                if local is None:
                    self._no_endpoint(where, res)
                    return {"type": "s3", "bucket": res.name, **opts}, False
                opts = {"bucket": res.name, "path_style": True, **local}
            elif target == "directory":
                opts = {"bucket": res.name, **opts}
            return {"type": target, **opts}, True
        defaults = self.aws_defaults()
        if defaults:
            return {"type": "s3", "bucket": res.name, "path_style": True, **defaults}, True
        self._disabled(where, "bucket", res)
        return {"type": "s3", "bucket": res.name}, False

    def broker_source(self, res: Resource | None, queue: str, where: str) -> dict[str, Any]:
        """An Amazon MQ (RabbitMQ) broker's queue: the override's connection, else the
        RabbitMQ on localhost:5672."""
        found = self.override(res) if res is not None else None
        table: dict[str, Any] = {"type": "rabbitmq", "queue": queue}
        if res is not None and res.value.startswith("arn:"):
            table["broker_arn"] = res.value
        if found is not None:
            return {**table, "type": found.type or "rabbitmq", **found.options}
        key = res.logical_id or res.value if res is not None else "the broker"
        warn_local_broker(self.out.warn, where, key, queue)
        return table

    def kafka_servers(
        self, keys: tuple[str | None, ...], given: list[str] | None, where: str
    ) -> dict[str, Any]:
        found = self.lookup(keys)
        if found is not None:
            return found.options
        if given:
            warn_remote_kafka(self.out.warn, where, given, str(keys[0]))
            return {"bootstrap_servers": given}
        name = next((k for k in keys if k), "the cluster")
        self.out.warn(
            where,
            f"no override for {name}: reading from the Kafka on localhost:9092 (map it in the "
            f"overrides file's resources.{name} with bootstrap_servers)",
        )
        return {"bootstrap_servers": ["localhost:9092"]}

    def destination(self, node: Any, where: str, trigger: str) -> dict[str, Any]:
        """An on-failure destination (SQS queue ARN, or what the override maps it to); a
        JSON Lines file when it has no local equivalent."""
        try:
            res = resource(self.tpl, node)
        except Unresolved as exc:
            return self._file(where, trigger, str(exc))
        found = self.override(res)
        if found is not None:
            kind = found.type or "sqs"
            opts = found.options
            if kind == "sqs" and "queue_url" not in opts:
                endpoint = opts.get("endpoint_url") or self.overrides.endpoint_url
                if endpoint is None:  # no queue to send to but AWS's: a file, nothing lost
                    why = f"the override of {res.logical_id or res.name} names no queue_url or "
                    return self._file(where, trigger, why + "endpoint_url")
                opts = {"queue_url": self.queue_url(res.name, endpoint), **opts}
            if kind == "rabbitmq":
                opts = {"routing_key": res.name, **opts}
            return {"type": kind, **opts}
        is_queue = res.value.startswith(("arn:aws:sqs:", "https://sqs.")) or (
            self.tpl.resource_type(res.logical_id or "") == "AWS::SQS::Queue"
        )
        defaults = self.aws_defaults()
        if is_queue and defaults:
            url = self.queue_url(res.name, defaults["endpoint_url"])
            return {"type": "sqs", "queue_url": url, **defaults}
        return self._file(where, trigger, f"no local destination for {res.logical_id or res.value}")

    def _file(self, where: str, trigger: str, why: str) -> dict[str, Any]:
        return file_destination(self.out, where, trigger, why)
