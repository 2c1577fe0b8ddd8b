"""Webhook event-mode test function: appends each event (one JSON line, fsynced)."""

import json
import os

OUT = os.environ["RECORD_FILE"]


def handler(event, context):
    with open(OUT, "a") as f:
        f.write(json.dumps({"request_id": context.aws_request_id, "event": event}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return {"ok": True}
