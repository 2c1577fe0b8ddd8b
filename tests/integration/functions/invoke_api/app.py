"""Function for the Invoke API and aws backend tests: echoes, fails, sleeps, logs, records."""

import json
import os
import time


def _record(path, doc):
    with open(path, "a") as f:
        f.write(json.dumps(doc) + "\n")
        f.flush()
        os.fsync(f.fileno())


def handler(event, context):
    if not isinstance(event, dict):
        return {"event": event}
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("record"):
        doc = {"request_id": context.aws_request_id, "id": event.get("id")}
        if os.environ.get("DAEMON"):
            doc["daemon"] = os.environ["DAEMON"]
        if event.get("with_trace"):
            doc["trace"] = os.environ.get("_X_AMZN_TRACE_ID")
        _record(event["record"], doc)
    action = event.get("action")
    if action == "raise":
        raise ValueError("bad value: " + str(event.get("value")))
    if action == "print":
        print("printed by", context.aws_request_id)
    if action == "trace":
        return {"trace": os.environ.get("_X_AMZN_TRACE_ID")}
    if action == "context":
        cc = context.client_context
        return {"custom": cc.custom if cc else None, "arn": context.invoked_function_arn}
    return {"event": event, "request_id": context.aws_request_id}
