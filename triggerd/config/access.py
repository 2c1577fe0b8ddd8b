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
    }
)

_ACTION = re.compile(r"^(\*|[a-z0-9-]+:[A-Za-z0-9*]+)$")
_KEY_ID = re.compile(r"^[A-Za-z0-9_]{1,128}$")


def matches(pattern: str, value: str) -> bool:
    """IAM's wildcard match: `*` any run of characters, `?` one character, nothing else
    special; action names compare case-insensitively as IAM's do."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


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
        pattern=r"^[\w+=,.@-]{1,64}$",
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
        description="Resources allowed: function names or ARNs, wildcards such as "
        "`orders-*` or `*` (the default)",
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
