"""Hello world: the no-op handler the invoke benchmarks call."""

from typing import Any


def handler(event: Any, context: Any) -> dict[str, str]:
    return {"hello": "world"}
