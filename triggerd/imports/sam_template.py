"""Reading a SAM template and resolving what SAM CLI resolves locally: Parameters (defaults,
`--parameter-overrides`), pseudo-parameters, Conditions, and the intrinsic functions Ref,
Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Select, Fn::Split, Fn::If, Fn::FindInMap, Fn::Base64, and
AWS::LanguageExtensions' Fn::ToJsonString and Fn::Length. Any other `Fn::` function is
Unresolved (a warning naming where), never copied through as data.

The YAML (or JSON) is decoded by cfn-lint's decoder, which reads CloudFormation's short-form
tags (`!Ref`, `!Sub`...) as AWS's own tools do. Resolving the intrinsics is written here: no
maintained library evaluates them outside a deployment (cfn-lint checks them, samtranslator
expands SAM resources but leaves them unresolved)."""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triggerd.config.plugins import import_extra
from triggerd.types import ConfigError

#: What SAM CLI gives the pseudo-parameters locally (its defaults), unless overridden.
PSEUDO_DEFAULTS = {
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "local",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NotificationARNs": [],
}

#: SAM CLI's AWS::StackId: a stack ARN built from the region, account and stack name with
#: this fixed id.
STACK_UUID = "51af3dc0-da77-11e4-872e-1234567db123"


#: Larger templates are refused (CloudFormation itself takes at most 1 MB).
MAX_TEMPLATE_BYTES = 5 * 1024 * 1024


class Unresolved(Exception):
    """A value that cannot be known locally (an import, an attribute only AWS knows)."""


class _NoValue:
    """AWS::NoValue: the property it is in is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


def load_template(path: Path) -> dict[str, Any]:
    """The decoded template, or ConfigError with one line per problem (file:line: what)."""
    try:
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise ConfigError(
                [f"{path}: {size} bytes, over the {MAX_TEMPLATE_BYTES} bytes a template may have"]
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the template: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: the template is not UTF-8 text: {exc.reason}"]) from None
    decode = import_extra("cfnlint.decode", "sam", "reading a SAM template")
    # The decoder logs its own copy of every error it returns: the caller prints those.
    logger = logging.getLogger("cfnlint")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
    try:
        template, matches = decode.decode_str(text)
    except RecursionError:
        raise ConfigError([f"{path}: the template is nested too deeply"]) from None
    if matches:
        raise ConfigError(
            [f"{path}:{getattr(m, 'linenumber', '?')}: {getattr(m, 'message', m)}" for m in matches]
        )
    if not isinstance(template, dict):
        raise ConfigError([f"{path}: the template's top level must be a mapping"])
    if not isinstance(template.get("Resources"), dict):
        raise ConfigError([f"{path}: the template has no Resources section"])
    return template


def _arn(service: str, region: str, account: str, rest: str, partition: str = "aws") -> str:
    return f"arn:{partition}:{service}:{region}:{account}:{rest}"


@dataclass
class Template:
    """A decoded template with its parameter values: resolves intrinsics and conditions."""

    data: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)
    _conditions: dict[str, bool] = field(default_factory=dict)
    _evaluating: set[str] = field(default_factory=set)
    _naming: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, data: dict[str, Any], overrides: Mapping[str, str]) -> Template:
        """Parameter values: `overrides` (pseudo-parameters too, as SAM CLI accepts them),
        else each parameter's Default. Unknown names in `overrides` and values outside
        AllowedValues are noted in `problems`."""
        tpl = cls(data)
        declared = data.get("Parameters") or {}
        if not isinstance(declared, dict):
            declared = {}
        values: dict[str, Any] = dict(PSEUDO_DEFAULTS)
        for name, value in overrides.items():
            if name not in declared and name not in (*PSEUDO_DEFAULTS, "AWS::StackId"):
                tpl.problems.append(("Parameters", f"{name}: no such parameter in the template"))
            values[name] = value
        for name, spec in declared.items():
            spec = spec if isinstance(spec, dict) else {}
            if name in values:
                value = values[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                continue  # a Ref to it is unresolved, naming the parameter
            value = "" if value is None else str(value)
            allowed = spec.get("AllowedValues")
            if isinstance(allowed, list) and value not in [str(a) for a in allowed]:
                # A NoEcho parameter is a secret: its value is never repeated.
                shown = "the value" if _true(spec.get("NoEcho")) else repr(value)
                tpl.problems.append(
                    (f"Parameters.{name}", f"{shown} is not one of AllowedValues {allowed}")
                )
            kind = str(spec.get("Type", "String"))
            if kind.startswith("AWS::SSM::Parameter::Value"):
                tpl.problems.append(
                    (
                        f"Parameters.{name}",
                        f"the value comes from the SSM parameter {value!r}, which is not read "
                        "locally: pass the value itself with --parameter-overrides",
                    )
                )
                continue
            listed = kind == "CommaDelimitedList" or kind.startswith("List<")
            values[name] = value.split(",") if listed else value
        if "AWS::StackId" not in values:
            values["AWS::StackId"] = (
                f"arn:{values['AWS::Partition']}:cloudformation:{values['AWS::Region']}:"
                f"{values['AWS::AccountId']}:stack/{values['AWS::StackName']}/{STACK_UUID}"
            )
        notify = values["AWS::NotificationARNs"]
        if isinstance(notify, str):
            values["AWS::NotificationARNs"] = [a for a in notify.split(",") if a]
        tpl.parameters = values
        return tpl

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.data.get("Resources") or {})

    def resource_type(self, logical_id: str) -> str | None:
        res = self.resources.get(logical_id)
        return str(res.get("Type")) if isinstance(res, dict) else None

    @property
    def region(self) -> str:
        return str(self.parameters["AWS::Region"])

    @property
    def account(self) -> str:
        return str(self.parameters["AWS::AccountId"])

    @property
    def partition(self) -> str:
        return str(self.parameters["AWS::Partition"])

    # ---- conditions ----------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        """The value of a condition of the Conditions section (Unresolved when unknown)."""
        if name in self._conditions:
            return self._conditions[name]
        conditions = self.data.get("Conditions") or {}
        if name not in conditions:
            raise Unresolved(f"no condition {name!r} in Conditions")
        if name in self._evaluating:
            raise Unresolved(f"condition {name!r} refers to itself")
        self._evaluating.add(name)
        try:
            value = self._truth(conditions[name])
        finally:
            self._evaluating.discard(name)
        self._conditions[name] = value
        return value

    def _truth(self, node: Any) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Condition":
                return self.condition(str(arg))
            if key == "Fn::Equals" and isinstance(arg, list) and len(arg) == 2:
                a, b = (self.resolve(v) for v in arg)
                return _text(a) == _text(b)
            if key == "Fn::Not" and isinstance(arg, list) and len(arg) == 1:
                return not self._truth(arg[0])
            if key == "Fn::And" and isinstance(arg, list):
                return all(self._truth(v) for v in arg)
            if key == "Fn::Or" and isinstance(arg, list):
                return any(self._truth(v) for v in arg)
        if isinstance(node, bool):
            return node
        raise Unresolved(f"not a condition: {node!r}")

    # ---- intrinsics ----------------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        """`node` with every intrinsic function replaced by its value; properties that are
        AWS::NoValue are left out. Raises Unresolved naming what could not be resolved."""
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, arg),) = node.items()
                handler = self._functions().get(str(key))
                if handler is not None:
                    return handler(arg)
                if str(key).startswith("Fn::"):
                    raise Unresolved(f"{key} is not an intrinsic function resolved locally")
            out = {}
            for k, v in node.items():
                value = self.resolve(v)
                if value is not NO_VALUE:
                    out[str(k)] = value
            return out
        if isinstance(node, list):
            return [v for v in (self.resolve(i) for i in node) if v is not NO_VALUE]
        if isinstance(node, str):
            return str(node)  # cfn-lint's str_node, as a plain str
        return node

    def _functions(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Base64": lambda arg: base64.b64encode(_text(self.resolve(arg)).encode()).decode(),
            "Fn::ImportValue": lambda arg: _raise(
                f"Fn::ImportValue {self._safe(arg)!r}: another stack's export is not known locally"
            ),
            "Fn::ToJsonString": self._to_json_string,
            "Fn::Length": self._length,
            "Fn::GetAZs": lambda arg: [f"{self.region}{z}" for z in "abc"],
            "Fn::Equals": lambda arg: self._truth({"Fn::Equals": arg}),
            "Fn::Not": lambda arg: self._truth({"Fn::Not": arg}),
            "Fn::And": lambda arg: self._truth({"Fn::And": arg}),
            "Fn::Or": lambda arg: self._truth({"Fn::Or": arg}),
            "Condition": lambda arg: self.condition(str(arg)),
        }

    def _safe(self, arg: Any) -> Any:
        try:
            return self.resolve(arg)
        except Unresolved:
            return arg

    def _ref(self, arg: Any) -> Any:
        name = str(self.resolve(arg))
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in (self.data.get("Parameters") or {}):
            raise Unresolved(
                f"parameter {name} has no value: give it a Default or pass "
                f"--parameter-overrides {name}=VALUE"
            )
        if name.startswith("AWS::"):
            raise Unresolved(f"pseudo-parameter {name} is not known locally")
        kind = self.resource_type(name)
        if kind is None:
            raise Unresolved(f"Ref {name}: no such parameter or resource")
        return self.physical(name, "Ref")

    def physical(self, logical_id: str, attribute: str) -> Any:
        """What `Ref` (attribute "Ref") or `Fn::GetAtt` gives for a resource of the template,
        as its local name or ARN; Unresolved for attributes only AWS knows."""
        kind = self.resource_type(logical_id) or ""
        props = self.resources[logical_id].get("Properties") or {}
        values = _attributes(self, kind, logical_id, props)
        if attribute in values:
            return values[attribute]
        if attribute == "Ref":
            return logical_id  # SAM CLI's value for a resource it does not model
        raise Unresolved(f"Fn::GetAtt {logical_id}.{attribute} ({kind}) is not known locally")

    def name_of(self, logical_id: str, key: str, default: str | None = None) -> str:
        """The resource's name property (`QueueName`...) when it resolves, else `default`
        (the logical id); a name that refers to itself falls back the same way."""
        props = self.resources[logical_id].get("Properties") or {}
        if key in props and logical_id not in self._naming:
            self._naming.add(logical_id)
            try:
                return _text(self.resolve(props[key]))
            except Unresolved:
                pass
            finally:
                self._naming.discard(logical_id)
        return default if default is not None else logical_id

    def _get_att(self, arg: Any) -> Any:
        arg = self.resolve(arg)
        if isinstance(arg, str):
            arg = arg.split(".", 1)
        if not (isinstance(arg, list) and len(arg) == 2):
            raise Unresolved(f"Fn::GetAtt {arg!r}: expected [Resource, Attribute]")
        logical_id, attribute = str(arg[0]), str(arg[1])
        if self.resource_type(logical_id) is None:
            raise Unresolved(f"Fn::GetAtt {logical_id}.{attribute}: no such resource")
        return self.physical(logical_id, attribute)

    def _sub(self, arg: Any) -> str:
        variables: dict[str, Any] = {}
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg[0], {str(k): v for k, v in arg[1].items()}
        else:
            text = arg
        if not isinstance(text, str):
            raise Unresolved(f"Fn::Sub {text!r}: not a string")

        def one(m: re.Match[str]) -> str:
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            name = inner.strip()
            if name in variables:
                return _text(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                res, _, att = name.partition(".")
                return _text(self._get_att([res, att]))
            return _text(self._ref(name))

        return re.sub(r"\$\{([^}]*)\}", one, text)

    def _join(self, arg: Any) -> str:
        arg = self.resolve(arg)
        if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], list)):
            raise Unresolved(f"Fn::Join {arg!r}: expected [delimiter, [values]]")
        return _text(arg[0]).join(_text(v) for v in arg[1])

    def _select(self, arg: Any) -> Any:
        arg = self.resolve(arg)
        if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], list)):
            raise Unresolved(f"Fn::Select {arg!r}: expected [index, [values]]")
        try:
            return arg[1][int(arg[0])]
        except (ValueError, IndexError):
            raise Unresolved(f"Fn::Select: index {arg[0]!r} not in {arg[1]!r}") from None

    def _split(self, arg: Any) -> list[str]:
        arg = self.resolve(arg)
        if not (isinstance(arg, list) and len(arg) == 2):
            raise Unresolved(f"Fn::Split {arg!r}: expected [delimiter, string]")
        return _text(arg[1]).split(_text(arg[0]))

    def _to_json_string(self, arg: Any) -> str:
        value = self.resolve(arg)
        if not isinstance(value, dict | list):
            raise Unresolved(f"Fn::ToJsonString {value!r}: expected a map or a list")
        return json.dumps(value, separators=(",", ":"))

    def _length(self, arg: Any) -> int:
        value = self.resolve(arg)
        if not isinstance(value, list):
            raise Unresolved(f"Fn::Length {value!r}: expected a list")
        return len(value)

    def _if(self, arg: Any) -> Any:
        if not (isinstance(arg, list) and len(arg) == 3):
            raise Unresolved(f"Fn::If {arg!r}: expected [condition, then, else]")
        return self.resolve(arg[1] if self.condition(str(arg[0])) else arg[2])

    def _find_in_map(self, arg: Any) -> Any:
        if not (isinstance(arg, list) and len(arg) in (3, 4)):
            raise Unresolved(f"Fn::FindInMap {arg!r}: expected [map, key, key]")
        default = arg[3].get("DefaultValue") if len(arg) == 4 and isinstance(arg[3], dict) else None
        name, top, second = (_text(self.resolve(v)) for v in arg[:3])
        try:
            return self.resolve(self.data["Mappings"][name][top][second])
        except (KeyError, TypeError):
            if default is not None:
                return self.resolve(default)
            raise Unresolved(f"Fn::FindInMap: no {name}.{top}.{second} in Mappings") from None


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _raise(message: str) -> Any:
    raise Unresolved(message)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        raise Unresolved(f"{value!r} is not a string")
    return str(value)


def _attributes(tpl: Template, kind: str, logical_id: str, props: dict[str, Any]) -> dict[str, Any]:
    """Ref and Fn::GetAtt values of the resources triggers name, as SAM CLI gives them: the
    physical name is the name property when the template sets one, else the logical id."""
    region, account, part = tpl.region, tpl.account, tpl.partition
    if kind == "AWS::SQS::Queue":
        name = tpl.name_of(logical_id, "QueueName")
        url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
        return {
            "Ref": url,
            "QueueUrl": url,
            "QueueName": name,
            "Arn": _arn("sqs", region, account, name, part),
        }
    if kind == "AWS::S3::Bucket":
        name = tpl.name_of(logical_id, "BucketName", logical_id.lower())
        return {"Ref": name, "Arn": f"arn:{part}:s3:::{name}"}
    if kind in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
        name = tpl.name_of(logical_id, "TableName")
        arn = _arn("dynamodb", region, account, f"table/{name}", part)
        return {"Ref": name, "Arn": arn, "StreamArn": f"{arn}/stream/local"}
    if kind == "AWS::Kinesis::Stream":
        name = tpl.name_of(logical_id, "Name")
        return {"Ref": name, "Arn": _arn("kinesis", region, account, f"stream/{name}", part)}
    if kind == "AWS::SNS::Topic":
        name = tpl.name_of(logical_id, "TopicName")
        arn = _arn("sns", region, account, name, part)
        return {"Ref": arn, "TopicArn": arn, "TopicName": name}
    if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
        arn = _arn("lambda", region, account, f"function:{logical_id}", part)
        return {"Ref": logical_id, "Arn": arn}
    if kind in ("AWS::Events::EventBus",):
        name = tpl.name_of(logical_id, "Name")
        arn = _arn("events", region, account, f"event-bus/{name}", part)
        return {"Ref": name, "Name": name, "Arn": arn}
    if kind == "AWS::AmazonMQ::Broker":
        return _broker(tpl, logical_id)
    if kind in ("AWS::MSK::Cluster", "AWS::MSK::ServerlessCluster"):
        arn = _arn("kafka", region, account, f"cluster/{logical_id}", part)
        return {"Ref": arn, "Arn": arn}
    return {}


def _broker(tpl: Template, logical_id: str) -> dict[str, Any]:
    """An Amazon MQ broker as AWS names it: `Ref` and `Id` its id (`b-` and a UUID, stable
    per region, account and name here), `Arn` `arn:aws:mq:REGION:ACCOUNT:broker:NAME:ID`,
    the ARN an `aws:rmq` event's `eventSourceArn` carries."""
    name = tpl.name_of(logical_id, "BrokerName")
    broker_id = "b-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tpl.region}:{tpl.account}:{name}"))
    arn = _arn("mq", tpl.region, tpl.account, f"broker:{name}:{broker_id}", tpl.partition)
    return {"Ref": broker_id, "Id": broker_id, "Arn": arn}
