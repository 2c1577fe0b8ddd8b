"""Exits while being imported."""

import sys

print("starting up")
sys.exit(2)


def handler(event, context):
    return event
