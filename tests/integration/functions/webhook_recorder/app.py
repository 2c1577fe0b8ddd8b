"""Webhook event-mode test function: appends each event (one JSON line, fsynced)."""

import json
import os
import time

OUT = os.environ["RECORD_FILE"]
SLEEP_S = float(os.environ.get("SLEEP_S", "0"))


def handler(event, context):
    if SLEEP_S:
        time.sleep(SLEEP_S)
    if "poison" in (event.get("body") or ""):
        raise ValueError("poison event")
    with open(OUT, "a") as f:
        f.write(
            json.dumps(
                {
                    "request_id": context.aws_request_id,
                    "trace": os.environ.get("_X_AMZN_TRACE_ID"),
                    "event": event,
                }
            )
            + "\n"
        )
        f.flush()
        os.fsync(f.fileno())
    return {"ok": True}
