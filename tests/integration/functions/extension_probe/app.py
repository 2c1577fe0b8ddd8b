"""Prints a line and returns what the test extension has recorded so far (or fails, or
sleeps, as the event asks)."""

import os
import time


def handler(event, context):
    print("probe saw", context.aws_request_id)
    if event.get("fail"):
        raise ValueError("probe failed")
    time.sleep(event.get("sleep", 0))
    with open(os.environ["RECORD_FILE"]) as f:
        return {"recorded": f.read().splitlines()}
