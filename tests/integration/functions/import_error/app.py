"""Fails at import time."""

import triggerd_no_such_module  # noqa: F401


def handler(event, context):
    return event
