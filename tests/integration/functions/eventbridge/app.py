"""Target of the event bus tests: appends what it received, with its LABEL, to RECORD_FILE;
fails instead when the event's detail asks it to."""

import json
import os


def handler(event, context):
    detail = event.get("detail") if isinstance(event, dict) else None
    if isinstance(detail, dict) and detail.get("fail"):
        raise ValueError("asked to fail")
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps({"label": os.environ["LABEL"], "event": event}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return None
