"""Records every `aws:sns` event it gets (one JSON line with the function's name, fsynced);
fails, without recording, for a message that contains "fail"; takes 0.3 s longer for one
that contains "slow"."""

import json
import os
import time

OUT = os.environ["RECORD_FILE"]
SLEEP_S = float(os.environ.get("SLEEP_S", "0"))


def handler(event, context):
    message = event["Records"][0]["Sns"]["Message"]
    if "fail" in message:
        raise ValueError("asked to fail")
    if SLEEP_S:
        time.sleep(SLEEP_S)
    if "slow" in message:
        time.sleep(0.3)
    with open(OUT, "a") as f:
        f.write(json.dumps({"function": context.function_name, "event": event}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return {"ok": True}
