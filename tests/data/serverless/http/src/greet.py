"""Answers API Gateway events (HTTP API 2.0 and REST 1.0) with what it was given."""

import json
import os


def handler(event, context):
    if event.get("version") == "2.0":
        shape, method = "2.0", event["requestContext"]["http"]["method"]
    else:
        shape, method = "1.0", event["httpMethod"]
    name = event["pathParameters"]["name"]
    body = {
        "message": f"{os.environ['GREETING']}, {name}",
        "stage": os.environ["STAGE"],
        "payload": shape,
        "method": method,
        "function": context.function_name,
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }
