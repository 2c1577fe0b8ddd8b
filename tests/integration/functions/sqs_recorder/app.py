"""Records every SQS batch it gets (one fsynced JSON line) and does what the bodies ask.

A body is JSON like {"id": "m1", "fail": "always" | "once", "sleep": 5}. Failed records are
reported in batchItemFailures when REPORT=1, else the whole invocation raises. MODE=malformed
returns an invalid partial-batch response.
"""

import json
import os
import time

OUT = os.environ["RECORD_FILE"]
REPORT = os.environ.get("REPORT") == "1"
MODE = os.environ.get("MODE", "")


def _body(record):
    try:
        value = json.loads(record["body"])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _fails(record):
    how = _body(record).get("fail")
    if how == "always":
        return True
    return how == "once" and record["attributes"]["ApproximateReceiveCount"] == "1"


def handler(event, context):
    records = event["Records"]
    sleep = max([_body(r).get("sleep", 0) for r in records] + [0])
    if sleep:
        time.sleep(sleep)
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
    if MODE == "malformed":
        return {"batchItemFailures": [{"itemIdentifier": ""}]}
    failed = [r["messageId"] for r in records if _fails(r)]
    if failed and not REPORT:
        raise RuntimeError("failed " + ",".join(failed))
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}
