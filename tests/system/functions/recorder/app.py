"""Records every event it handled (one JSON line, fsynced); fails, without recording, for an S3
key or a RabbitMQ message body that contains "poison", and for the Scheduled Event of the tick
whose time is POISON_TIME."""

import base64
import json
import os
import time

OUT = os.environ["RECORD_FILE"]
SLEEP_S = float(os.environ.get("SLEEP_S", "0"))
POISON_TIME = os.environ.get("POISON_TIME")


def _append(doc):
    with open(OUT, "a") as f:
        f.write(json.dumps(doc) + "\n")
        f.flush()
        os.fsync(f.fileno())


def handler(event, context):
    if SLEEP_S:
        time.sleep(SLEEP_S)
    keys = [r["s3"]["object"]["key"] for r in event.get("Records", []) if "s3" in r]
    if any("poison" in k for k in keys):
        raise ValueError("poison file " + ",".join(keys))
    if POISON_TIME and event.get("time") == POISON_TIME:
        raise ValueError("poison tick " + POISON_TIME)
    queues = event.get("rmqMessagesByQueue", {})
    if any(b"poison" in base64.b64decode(m["data"]) for ms in queues.values() for m in ms):
        raise ValueError("poison message")
    _append({"request_id": context.aws_request_id, "event": event})
    return {"ok": keys}
