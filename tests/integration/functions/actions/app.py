"""Does what the event asks: fail, sleep, exit, crash, print, log."""

import logging
import os
import signal
import sys
import time

log = logging.getLogger("app")
log.setLevel(logging.INFO)


def handler(event, context):
    action = event.get("action")
    if action == "raise":
        raise ValueError("bad value: " + str(event.get("value")))
    if action == "sleep":
        time.sleep(event["seconds"])
    elif action == "exit":
        sys.exit(event["code"])
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "set":
        return {1, 2}
    elif action == "print":
        print("hello from", context.aws_request_id)
        print("to stderr", file=sys.stderr)
        log.info("logged %s", "line")
    elif action == "big":
        return "x" * event["size"]
    elif action == "spam":
        for i in range(event["lines"]):
            print(f"line {i:05d} " + "x" * 100)
    return {"pid": os.getpid(), "action": action}
