"""An EventBridge scheduled-event handler: appends the scheduled time to a log."""

import os
from pathlib import Path

OUT = (Path(os.environ["LAMBDA_TASK_ROOT"]) / os.environ["OUT_DIR"]).resolve()


def handler(event, context):
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "heartbeat.log", "a") as log:
        log.write(f"{event['time']} {event['id']}\n")
    return {"time": event["time"]}
