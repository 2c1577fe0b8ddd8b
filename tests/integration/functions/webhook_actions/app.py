"""Webhook test function: what it returns is chosen by the `action` query parameter."""

import base64
import json
import time


def _query(event):
    return event.get("queryStringParameters") or {}


def handler(event, context):
    action = _query(event).get("action", "echo")
    if action == "raise":
        raise ValueError("boom")
    if action == "sleep":
        time.sleep(float(_query(event).get("s", "5")))
    if action == "plain":
        return {"hello": "world"}
    if action == "plainstr":
        return "hello"
    if action == "plainlist":
        return [1, 2]
    if action == "dictbody":
        return {"statusCode": 200, "body": {"a": 1}}
    if action == "nostatus":
        return {"body": "x"}
    if action == "badstatus":
        return {"statusCode": "teapot", "body": "x"}
    if action == "cookies":
        return {
            "statusCode": 201,
            "cookies": ["a=1; Path=/", "b=2"],
            "headers": {"x-h": "v", "content-type": "text/plain"},
            "body": "ok",
        }
    if action == "multi":
        return {
            "statusCode": 200,
            "headers": {"X-One": "1", "X-Both": "h", "Content-Type": "text/plain"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Both": ["m1", "m2"]},
            "body": "ok",
        }
    if action == "b64":
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "image/png"},
            "body": base64.b64encode(b"\x89PNG\x00\xff").decode(),
            "isBase64Encoded": True,
        }
    if action == "empty":
        return {"statusCode": 204}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(event),
    }
