"""An unmodified API Gateway HTTP API (payload format 2.0) handler: answers with the line,
word and byte counts of the request body, and whether it arrived base64-encoded."""

import base64
import json


def handler(event, context):
    body = event.get("body") or ""
    # API Gateway base64-encodes a body whose content type it does not take for text.
    encoded = bool(event.get("isBase64Encoded"))
    data = base64.b64decode(body) if encoded else body.encode("utf-8")
    text = data.decode("utf-8", errors="replace")
    counts = {
        "lines": text.count("\n"),
        "words": len(text.split()),
        "bytes": len(data),
        "base64": encoded,
        "request_id": context.aws_request_id,
    }
    http = event["requestContext"]["http"]
    print(f"{http['method']} {event['rawPath']}: {counts['words']} words")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(counts),
    }
