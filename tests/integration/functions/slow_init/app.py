"""Takes INIT_SLEEP_S seconds to import (heavy dependencies, say), noting each init in the
file INIT_LOG names."""

import os
import time

with open(os.environ["INIT_LOG"], "a") as log:
    log.write(f"{os.getpid()}\n")
time.sleep(float(os.environ["INIT_SLEEP_S"]))


def handler(event, context):
    return {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}
