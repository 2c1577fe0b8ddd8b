"""Does what the event asks: fail, sleep, exit, crash, print, log, hoard memory, use /tmp."""

import logging
import os
import signal
import sys
import tempfile
import time

log = logging.getLogger("app")
log.setLevel(logging.INFO)


def _raise(event, context):
    raise ValueError("bad value: " + str(event.get("value")))


def _sleep(event, context):
    time.sleep(event["seconds"])


def _exit(event, context):
    sys.exit(event["code"])


def _kill(event, context):
    os.kill(os.getpid(), signal.SIGKILL)


def _set(event, context):
    return {1, 2}


def _print(event, context):
    print("hello from", context.aws_request_id)
    print("to stderr", file=sys.stderr)
    log.info("logged %s", "line")


def _big(event, context):
    return "x" * event["size"]


def _spam(event, context):
    for i in range(event["lines"]):
        print(f"line {i:05d} " + "x" * 100)


def _partial(event, context):
    sys.stdout.write(event["text"])  # no newline: the last line stays unterminated


def _alloc(event, context):
    hoard = [b"x" * (1 << 20) for _ in range(event["mb"])]  # touched pages: resident
    return {"pid": os.getpid(), "action": "alloc", "held": len(hoard)}


def _spike(event, context):
    hoard = [b"x" * (1 << 20) for _ in range(event["mb"])]  # resident for a moment
    del hoard
    time.sleep(event["then_sleep"])


_KEPT = []


def _keep(event, context):
    _KEPT.append(b"k" * (event["mb"] << 20))  # a leak: resident until the worker ends


def _flood(event, context):
    line = "f" * 99
    for _ in range(event["lines"]):
        print(line)
        print(line, file=sys.stderr)


def _tmp(event, context):
    with tempfile.NamedTemporaryFile("w", delete=False, suffix=".txt") as f:
        f.write("scratch")
    files = os.listdir(os.environ["TMPDIR"])
    return {"tmpdir": tempfile.gettempdir(), "file": f.name, "files": files}


ACTIONS = {
    "raise": _raise,
    "sleep": _sleep,
    "exit": _exit,
    "kill": _kill,
    "set": _set,
    "print": _print,
    "big": _big,
    "spam": _spam,
    "partial": _partial,
    "alloc": _alloc,
    "flood": _flood,
    "tmp": _tmp,
    "keep": _keep,
    "spike": _spike,
}
#: Actions whose return value is the handler's result.
RETURNING = {"set", "big", "alloc", "tmp"}


def handler(event, context):
    action = event.get("action")
    run = ACTIONS.get(action)
    if run is not None:
        result = run(event, context)
        if action in RETURNING:
            return result
    return {"pid": os.getpid(), "action": action}
