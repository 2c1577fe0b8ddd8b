"""Example handler for config/triggerd.example.toml: the nightly report's scheduled event."""


def handler(event, context):
    return {"report_for": event.get("time")}
