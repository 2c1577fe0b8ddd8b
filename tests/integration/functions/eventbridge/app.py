"""Target of the event bus tests: appends what it received, with its LABEL, to RECORD_FILE."""

import json
import os


def handler(event, context):
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps({"label": os.environ["LABEL"], "event": event}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return None
