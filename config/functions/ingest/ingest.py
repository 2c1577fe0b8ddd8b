"""Example handler for config/triggerd.example.toml: copies each new file's name to a log."""

import os
from pathlib import Path


def handler(event, context):
    target = Path(os.environ.get("TARGET_DIR", "/tmp"))
    target.mkdir(parents=True, exist_ok=True)
    keys = [r["s3"]["object"]["key"] for r in event.get("Records", [])]
    with open(target / "ingested.log", "a") as log:
        for key in keys:
            log.write(key + "\n")
    return {"ingested": keys}
