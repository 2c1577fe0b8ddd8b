"""The names of the Invoke API's durable queues, without the HTTP machinery (the CLI's
`status` and `dlq` name them too)."""

from __future__ import annotations


def queue_name(function: str) -> str:
    """The durable queue (trigger name) holding a function's Event invocations."""
    return f"invoke-api:{function}"
