"""Subscription filter policies, matched by the core filter engine (`triggerd.events.filters`,
the EventBridge pattern language that SNS's policy syntax is a subset of).

Scope `MessageAttributes` matches `Message.attribute_view()` (String as strings, Number as
numbers, String.Array as arrays, Binary ignored); scope `MessageBody` matches the body parsed
as a JSON object, and a body that is not one matches no policy. Where the engine is stricter
or wider than SNS: literal numbers in a policy compare by their JSON text (use `numeric` for
values; docs/sns.md says so); SNS's limits (5 keys, 150 combinations, no `wildcard`) are
checked by `check_filter_policy`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from triggerd.config.sns import NESTED_ATTRIBUTE_POLICY, check_filter_policy, nested_policy
from triggerd.events.filters import CompiledFilter, compile_filters
from triggerd.fanout.sns.message import Message
from triggerd.fanout.sns.wire import SnsError

__all__ = ["FilterPolicy", "Scope", "compile_policy"]

Scope = Literal["MessageAttributes", "MessageBody"]


@dataclass(frozen=True, slots=True)
class FilterPolicy:
    policy: dict[str, Any]
    scope: Scope
    compiled: CompiledFilter

    def matches(self, message: Message) -> bool:
        if self.scope == "MessageBody":
            view = message.body_view()
            return view is not None and self.compiled.matches(view)
        return self.compiled.matches(message.attribute_view())


def compile_policy(policy: Any, scope: str) -> FilterPolicy:
    """A policy (an object or JSON text) and its scope, checked; InvalidParameter naming the
    problem."""
    if scope not in ("MessageAttributes", "MessageBody"):
        raise SnsError(
            "InvalidParameter",
            "Invalid parameter: Attributes Reason: FilterPolicyScope: Invalid value "
            f"[{scope[:40]}]. Please use either MessageBody or MessageAttributes",
        )
    try:
        checked = check_filter_policy(policy)
    except ValueError as exc:
        raise SnsError("InvalidParameter", f"Invalid parameter: FilterPolicy: {exc}") from None
    if scope == "MessageAttributes" and nested_policy(checked):
        raise SnsError(
            "InvalidParameter", f"Invalid parameter: FilterPolicy: {NESTED_ATTRIBUTE_POLICY}"
        )
    return FilterPolicy(checked, scope, compile_filters([checked], max_filters=1))  # type: ignore[arg-type]
