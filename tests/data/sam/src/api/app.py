import json
import os


def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {
                "path": event.get("rawPath") or event.get("path"),
                "stage": event.get("requestContext", {}).get("stage"),
                "greeting": os.environ.get("GREETING"),
            }
        ),
    }
