"""An unmodified S3-triggered Lambda handler: counts the words of each new object."""

import json
import os
from pathlib import Path
from urllib.parse import unquote_plus

TASK_ROOT = Path(os.environ["LAMBDA_TASK_ROOT"])
INBOX = (TASK_ROOT / os.environ["INBOX_DIR"]).resolve()
OUT = (TASK_ROOT / os.environ["OUT_DIR"]).resolve()


def handler(event, context):
    done = []
    for record in event["Records"]:
        key = unquote_plus(record["s3"]["object"]["key"])
        target = OUT / (key + ".json")
        if record["eventName"].startswith("ObjectRemoved"):
            target.unlink(missing_ok=True)
            print(f"removed {target.name}")
            continue
        data = (INBOX / key).read_bytes()
        text = data.decode("utf-8", errors="replace")
        counts = {
            "key": key,
            "lines": text.count("\n"),
            "words": len(text.split()),
            "bytes": len(data),
            "etag": record["s3"]["object"].get("eTag"),
            "request_id": context.aws_request_id,
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(counts, indent=2) + "\n")
        print(f"{key}: {counts['words']} words")
        done.append(key)
    return {"processed": done}
