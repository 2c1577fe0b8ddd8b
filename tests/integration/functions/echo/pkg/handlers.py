"""A handler inside a package: `pkg.handlers.handler`."""


def handler(event, context):
    return {"package": __name__, "event": event}
