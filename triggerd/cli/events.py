"""`triggerd events replay BUS --since TIME`: re-deliver a bus's archived events.

The running daemon does the work: the command sends it EventBridge's StartReplay on its
control listener (signed with the standard AWS credential chain when the daemon has access
keys, like `triggerd reload`) and prints its verdict."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import click

from triggerd.cli.dlq import parse_since
from triggerd.cli.options import config_option, resolve_config
from triggerd.types import ExitCode

__all__ = ["events"]

REPLAY_KEY = (
    "the daemon requires AWS Signature Version 4 (daemon.access_keys): give this command a "
    "key allowed events:StartReplay (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS "
    "profile)"
)


@click.group()
def events() -> None:
    """EventBridge-compatible event buses: replay archived events."""


@events.command()
@click.argument("bus")
@click.option("--since", required=True, help="From this ISO time, or a duration back (1h, 2d)")
@click.option("--until", default=None, help="Up to this ISO time or duration back (default now)")
@click.option("--rule", "rules", multiple=True, help="Only to this rule (repeatable)")
@click.option("--name", default=None, help="The replay's name (default replay-<time>)")
@config_option
def replay(
    bus: str,
    since: str,
    until: str | None,
    rules: tuple[str, ...],
    name: str | None,
    config_path: str | None,
) -> None:
    """Deliver BUS's archived events again, from --since (to --until), to its enabled rules'
    targets (or only --rule's); each event carries "replay-name"."""
    from triggerd.cli.control import _fail, _load, _post
    from triggerd.cli.status import daemon_url

    cfg = _load(resolve_config(None, config_path))
    found = [b for b in cfg.event_buses if b.name == bus]
    if not found:
        _fail(f"no event bus {bus!r} in the config", 2)
        return
    if found[0].archive is None:
        _fail(f"event bus {bus!r} has no archive (event_buses.archive)", 2)
        return
    known = {r.name for r in found[0].rules}
    for rule in rules:
        if rule not in known:
            _fail(f"event bus {bus!r} has no rule {rule!r}", 2)
    now = time.time()
    start = parse_since(since, now)
    end = now if until is None else parse_since(until, now)
    if end <= start:
        _fail("--until must be later than --since (an empty replay window)", 2)
        return
    d = cfg.daemon
    prefix = f"arn:aws:events:{d.region}:{d.account_id}:"
    bus_arn = f"{prefix}event-bus/{bus}"
    destination: dict[str, object] = {"Arn": bus_arn}
    if rules:
        rule_prefix = f"{prefix}rule/" if bus == "default" else f"{prefix}rule/{bus}/"
        destination["FilterArns"] = [rule_prefix + r for r in rules]
    body: dict[str, object] = {
        "ReplayName": name
        or f"replay-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{uuid.uuid4().hex[:6]}",
        "EventSourceArn": f"{prefix}archive/{found[0].archive_name}",
        "EventStartTime": start,
        "EventEndTime": end,
        "Destination": destination,
    }
    url = daemon_url(cfg)
    if url is None:
        _fail("the daemon serves no control endpoints (control_listen is empty)", 2)
        return
    headers = {
        "X-Amz-Target": "AWSEvents.StartReplay",
        "Content-Type": "application/x-amz-json-1.1",
    }
    status, answer = asyncio.run(
        _post(cfg, url, "/", body, REPLAY_KEY, service="events", headers=headers)
    )
    if status != 200 or not isinstance(answer, dict):
        _fail(str(answer), ExitCode.DAEMON_UNREACHABLE if status == 0 else 1)
        return
    click.echo(f"{answer.get('ReplayArn')}: {answer.get('StateReason')}")
    sys.exit(0 if answer.get("State") == "COMPLETED" else 1)
