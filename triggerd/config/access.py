"""Who may call the AWS-compatible APIs on the control listener: access keys configured in
triggerd (`[[daemon.access_keys]]`), each with a minimal IAM-style policy (the actions it may
perform and the resources it may perform them on), and where the control surface is served.

The requests themselves are checked with AWS Signature Version 4 (`triggerd.http.sigv4`)."""

from __future__ import annotations

import fnmatch
import ipaddress
import re

from pydantic import Field, SecretStr, field_validator

from triggerd.types import Model

#: The actions triggerd's APIs perform, by service prefix. A policy naming an action that
#: none of them performs would grant nothing, so it is a config error (a typo, usually).
KNOWN_ACTIONS = frozenset(
    {
        "lambda:InvokeFunction",
        "lambda:ListFunctions",
        # `triggerd pause|resume` (triggerd.http.pausing)
        "triggerd:PauseTrigger",
        "triggerd:ResumeTrigger",
        # `triggerd reload` (POST /control/reload)
        "triggerd:Reload",
        # EventBridge-compatible buses (triggerd.fanout.events); resources are bus ARNs
        # (PutEvents, ListRules) and rule ARNs (DescribeRule, ListTargetsByRule)
        "events:PutEvents",
        "events:ListEventBuses",
        "events:ListRules",
        "events:DescribeRule",
        "events:ListTargetsByRule",
        # `triggerd events replay`: the archive's ARN (archive/<bus>-archive)
        "events:StartReplay",
        # The SNS Query API (triggerd.fanout.sns); resources are topic ARNs (PublishBatch is
        # authorized as sns:Publish, ListTopics on arn:aws:sns:<region>:<account>:*, as IAM).
        "sns:CreateTopic",
        "sns:GetTopicAttributes",
        "sns:ListSubscriptions",
        "sns:ListSubscriptionsByTopic",
        "sns:ListTopics",
        "sns:Publish",
        "sns:Subscribe",
        "sns:Unsubscribe",
    }
)

_ACTION = re.compile(r"^(\*|[a-z0-9-]+:[A-Za-z0-9*]+)$")
_KEY_ID = re.compile(r"^[A-Za-z0-9_]{1,128}$")


def matches(pattern: str, value: str) -> bool:
    """IAM's wildcard match: `*` any run of characters, `?` one character, nothing else
    special; action names compare case-insensitively as IAM's do."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def can_match_arn(pattern: str, prefix: str) -> bool:
    """Whether the wildcard `pattern` matches some ARN `prefix` + `name[:qualifier]` (a
    function's name and qualifier, a trigger's name: at most one `:` in all).

    Written by hand: fnmatch answers whether one value matches, not whether any value of a
    given form can. The pattern is run as the small automaton it is (a position per
    character; a `*` may stay where it is) over the prefix; a position still alive at the end
    can finish the match with a name (and qualifier) if what is left of the pattern holds at
    most one literal `:` (wildcards can always be given values without one)."""
    alive = _closure(pattern, {0})
    for char in prefix:
        step: set[int] = set()
        for pos in alive:
            if pos == len(pattern):
                continue
            token = pattern[pos]
            if token == "*":
                step.add(pos)
            elif token in ("?", char):
                step.add(pos + 1)
        alive = _closure(pattern, step)
        if not alive:
            return False
    return any(pattern[pos:].count(":") <= 1 for pos in alive)


def _closure(pattern: str, positions: set[int]) -> set[int]:
    """The positions plus those reached by letting each `*` match nothing."""
    out = set(positions)
    todo = list(positions)
    while todo:
        pos = todo.pop()
        if pos < len(pattern) and pattern[pos] == "*" and pos + 1 not in out:
            out.add(pos + 1)
            todo.append(pos + 1)
    return out


def function_arn_prefix(region: str, account_id: str) -> str:
    """What every function ARN of this daemon starts with."""
    return f"arn:aws:lambda:{region}:{account_id}:function:"


def topic_arn_prefix(region: str, account_id: str) -> str:
    """What every SNS topic ARN of this daemon starts with."""
    return f"arn:aws:sns:{region}:{account_id}:"


def trigger_arn_prefix(region: str, account_id: str) -> str:
    """What every trigger ARN of this daemon starts with (`triggerd pause|resume`)."""
    return f"arn:aws:triggerd:{region}:{account_id}:trigger/"


def events_arn_prefix(region: str, account_id: str) -> str:
    """What every event bus and rule ARN of this daemon starts with (`event-bus/NAME`,
    `rule/NAME`, `rule/BUS/NAME`)."""
    return f"arn:aws:events:{region}:{account_id}:"


class AccessKey(Model):
    """One access key pair and what it may do, as a minimal IAM identity policy."""

    access_key_id: str = Field(
        description="The key id clients sign with (AWS_ACCESS_KEY_ID): letters, digits, _"
    )
    secret_access_key: SecretStr = Field(
        description="The secret clients sign with (AWS_SECRET_ACCESS_KEY); never logged"
    )
    name: str | None = Field(
        None,
        # The length apart: `\w{1,64}` makes pydantic-core's regex (Unicode classes) about
        # 5 ms to compile, in every command that loads a config; this one 0.1 ms.
        pattern=r"^[\w+=,.@-]+$",
        max_length=64,
        description="The user name in error messages (arn:aws:iam::<account>:user/<name>); "
        "default: the key id",
    )
    actions: list[str] = Field(
        min_length=1,
        description="Actions allowed, e.g. lambda:InvokeFunction; wildcards: lambda:*, *",
    )
    resources: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="Resources allowed: function names or ARNs as called (`orders` for "
        "unqualified calls, `orders:*` for qualified ones), wildcards such as `orders-*` or "
        "`*` (the default)",
    )

    @field_validator("access_key_id")
    @classmethod
    def _key_id(cls, value: str) -> str:
        if not _KEY_ID.match(value):
            raise ValueError("must be 1-128 letters, digits or underscores, as IAM's key ids are")
        return value

    @field_validator("secret_access_key")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        for action in value:
            if not _ACTION.match(action):
                raise ValueError(f"{action!r} is not an action (service:Action, e.g. lambda:*)")
            lowered = action.lower()
            if not any(matches(lowered, known.lower()) for known in KNOWN_ACTIONS):
                known = ", ".join(sorted(KNOWN_ACTIONS))
                raise ValueError(f"{action!r} matches no action triggerd serves ({known})")
        return value

    def resource_problems(self, region: str, account_id: str) -> list[str]:
        """Resource ARN patterns that no function or trigger of this daemon (its region and
        account) can ever match: they would grant nothing, so they are config errors."""
        function = function_arn_prefix(region, account_id)
        trigger = trigger_arn_prefix(region, account_id)
        events = events_arn_prefix(region, account_id)
        topic = topic_arn_prefix(region, account_id)
        return [
            f"{pattern!r} can never match: this daemon's functions are {function}<name>, "
            f"its triggers {trigger}<name>, its event buses {events}event-bus/<name> and its "
            f"topics {topic}<name>"
            for pattern in self.resources
            if pattern.startswith("arn:")
            and not can_match_arn(pattern, function)
            and not can_match_arn(pattern, trigger)
            and not can_match_arn(pattern, events + "event-bus/")
            and not can_match_arn(pattern, events + "rule/")
            and not can_match_arn(pattern, events + "archive/")
            and not can_match_arn(pattern, topic)
        ]

    @property
    def user(self) -> str:
        return self.name or self.access_key_id

    def allows(self, action: str, resources: tuple[str, ...]) -> bool:
        """Whether the policy allows `action` on a resource known by any of `resources`
        (a function's name and its ARN)."""
        lowered = action.lower()
        if not any(matches(a.lower(), lowered) for a in self.actions):
            return False
        return any(matches(p, r) for p in self.resources for r in resources)


def is_loopback(listen: str) -> bool:
    """Whether a host:port listens on loopback only (127.0.0.0/8, ::1, localhost)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
