"""Webhook test function: what it returns is chosen by the `action` query parameter."""

import base64
import json
import os
import time

CANNED = {
    "plain": {"hello": "world"},
    "plainstr": "hello",
    "plainlist": [1, 2],
    "dictbody": {"statusCode": 200, "body": {"a": 1}},
    "nostatus": {"body": "x"},
    "badstatus": {"statusCode": "teapot", "body": "x"},
    "cookies": {
        "statusCode": 201,
        "cookies": ["a=1; Path=/", "b=2"],
        "headers": {"x-h": "v", "content-type": "text/plain"},
        "body": "ok",
    },
    "multi": {
        "statusCode": 200,
        "headers": {"X-One": "1", "X-Both": "h", "Content-Type": "text/plain"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Both": ["m1", "m2"]},
        "body": "ok",
    },
    "b64": {
        "statusCode": 200,
        "headers": {"Content-Type": "image/png"},
        "body": base64.b64encode(b"\x89PNG\x00\xff").decode(),
        "isBase64Encoded": True,
    },
    "empty": {"statusCode": 204},
}


def handler(event, context):
    query = event.get("queryStringParameters") or {}
    action = query.get("action", "echo")
    if action == "raise":
        raise ValueError("boom")
    if action == "sleep":
        time.sleep(float(query.get("s", "5")))
    if action in CANNED:
        return CANNED[action]
    if action == "trace":
        return {"statusCode": 200, "body": os.environ.get("_X_AMZN_TRACE_ID", "")}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(event),
    }
