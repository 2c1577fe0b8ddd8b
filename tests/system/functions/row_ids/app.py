"""Records the `id` of every row change it receives (one JSON line per batch, fsynced)."""

import json
import os
import time

OUT = os.environ["RECORD_FILE"]
SLEEP_S = float(os.environ.get("SLEEP_S", "0"))


def handler(event, context):
    if SLEEP_S:
        time.sleep(SLEEP_S)
    ids = []
    for record in event["Records"]:
        image = record["dynamodb"].get("NewImage") or record["dynamodb"]["Keys"]
        ids.append(int(image["id"]["N"]))
    with open(OUT, "a") as f:
        f.write(json.dumps(ids) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return {}
