"""The handlers of tests/data/serverless/v3/serverless.yml."""


def handler(event, context):
    return {"ok": True}


def report(event, context):
    return {"ok": True}


def api(event, context):
    return {"statusCode": 200, "body": "ok"}
