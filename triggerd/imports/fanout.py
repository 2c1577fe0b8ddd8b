"""SNS and EventBridge events of a SAM template or serverless.yml as triggerd's own fan-out:
an `[sns]` topic with a subscription of the function (docs/sns.md), an `[[event_buses]]`
rule with the function as its target (docs/eventbridge.md). Both are served on the control
listener, where applications publish with `endpoint_url`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FanOut", "bus_name", "rule_name", "topic_name"]

_RULE_CHARS = re.compile(r"[^.\-_A-Za-z0-9]")


def topic_name(value: str) -> str:
    """A topic's name from its ARN (or the name itself)."""
    return value.rsplit(":", 1)[-1] if value.startswith("arn:") else value


def bus_name(value: str) -> str:
    """A bus's name from its ARN (`...:event-bus/NAME`), or the name itself."""
    if value.startswith("arn:") and ":event-bus/" in value:
        return value.split(":event-bus/", 1)[1]
    return value


def rule_name(name: str) -> str:
    """`name` as a valid rule name (letters, digits, `.-_`, at most 64)."""
    return _RULE_CHARS.sub("-", name)[:64] or "rule"


@dataclass
class FanOut:
    """The topics and bus rules a translation's events subscribe functions to."""

    topics: dict[str, dict[str, Any]] = field(default_factory=dict)
    buses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: The functions topics and rules deliver to.
    targets: set[str] = field(default_factory=set)
    #: Per function: `[async_invocation.NAME]` (retries, event age, on-failure) of what
    #: topics and buses deliver to it, from the definition's async settings.
    async_invocation: dict[str, dict[str, Any]] = field(default_factory=dict)

    def subscribe(self, topic: str, subscription: dict[str, Any], **settings: Any) -> None:
        """`subscription` (`function`, filter policy...) on `topic`, declared once with the
        settings of the first event that names it (FIFO when the name ends in `.fifo`)."""
        table = self.topics.setdefault(
            topic, {"name": topic, **({"fifo": True} if topic.endswith(".fifo") else {})}
        )
        for key, value in settings.items():
            table.setdefault(key, value)
        table.setdefault("subscriptions", []).append(subscription)
        self.targets.add(str(subscription["function"]))

    def rule(self, bus: str, rule: dict[str, Any]) -> str:
        """`rule` on `bus` under a name no other rule of that bus has; that name."""
        rules = self.buses.setdefault(bus, [])
        taken = {r["name"] for r in rules}
        base = rule_name(str(rule["name"]))
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base[:60]}-{n}"
        rules.append({**rule, "name": name})
        self.targets.update(str(t["function"]) for t in rule["targets"])
        return name

    def apply(self, config: dict[str, Any], warn: Callable[[str, str], None]) -> None:
        """The topics and buses into `config`, and a note on where they are served."""
        if self.topics:
            config["sns"] = {"topics": list(self.topics.values())}
        if self.buses:
            config["event_buses"] = [
                {"name": name, "rules": rules} for name, rules in self.buses.items()
            ]
        if self.async_invocation:
            config["async_invocation"] = self.async_invocation
        if not (self.topics or self.buses):
            return
        daemon = config.setdefault("daemon", {})
        listen = daemon.get("control_listen", "127.0.0.1:9071")
        what = " and ".join(
            w for w, used in (("SNS topics", self.topics), ("event buses", self.buses)) if used
        )
        warn(
            "daemon.control_listen",
            f"the {what} are served on the control listener ({listen or 'none set'}): "
            f"publish with endpoint_url=http://{listen or 'HOST:PORT'} (set daemon.control_listen "
            "and daemon.access_keys in the overrides file to change or sign it)",
        )
