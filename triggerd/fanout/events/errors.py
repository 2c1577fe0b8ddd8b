"""The errors EventBridge's operations answer with (AWS's JSON 1.1 `__type`)."""

from __future__ import annotations

__all__ = ["EventsError"]


class EventsError(Exception):
    """A refused call: `code` is the `__type` SDKs raise as the ClientError's code."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
