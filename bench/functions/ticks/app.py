"""Records each schedule tick it is invoked with: the wall time of the invocation and the
tick's own time, one JSON line appended to RECORD_FILE (the failover benchmark reads them)."""

import json
import os
import time
from typing import Any

OUT = os.environ["RECORD_FILE"]


def handler(event: Any, context: Any) -> None:
    line = json.dumps({"t": time.time(), "tick": event["time"]}) + "\n"
    with open(OUT, "a") as f:
        f.write(line)
