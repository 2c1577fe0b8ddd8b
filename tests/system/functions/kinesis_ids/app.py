"""Records the `id` of every Kinesis record it receives (one JSON line per batch, fsynced)."""

import base64
import json
import os
import time

OUT = os.environ["RECORD_FILE"]
SLEEP_S = float(os.environ.get("SLEEP_S", "0"))


def handler(event, context):
    if SLEEP_S:
        time.sleep(SLEEP_S)
    ids = [json.loads(base64.b64decode(r["kinesis"]["data"]))["id"] for r in event["Records"]]
    with open(OUT, "a") as f:
        f.write(json.dumps(ids) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return {}
