"""StartReplay: re-deliver a bus's archived events (`triggerd events replay BUS --since`).

AWS's request shape: `ReplayName`, `EventSourceArn` (the archive's ARN,
`arn:aws:events:REGION:ACCOUNT:archive/<bus>-archive`), `EventStartTime` and `EventEndTime`
(ingestion times, end exclusive), `Destination.Arn` (the archive's own bus, as AWS requires)
and optionally `Destination.FilterArns` (only these rules). Each archived event is matched
against the bus's current enabled rules (or the filter's) and delivered like a new one, with
`"replay-name": ReplayName` added to the event, as AWS marks replayed events; replayed
events are not archived again.

Unlike AWS's (asynchronous, followed with DescribeReplay), this replay runs while the call
waits: pages of archived events are matched and committed on the targets' queues one page
at a time, and the answer (`State: COMPLETED`) says how many events and invocations it
queued. An event that cannot be routed (a target's queue not running, a transformed input
over the size limit) is skipped and counted: the replay goes on, and answers `State: FAILED`
with how many were not delivered and why. A replay cut short (the client gave up, the daemon
stopped) has queued whole pages only; running it again delivers those events again
(at-least-once, as replays are)."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson

from triggerd.events.tracing import trace_id_for
from triggerd.fanout.events.errors import EventsError
from triggerd.state.sqlite import StateStoreError

if TYPE_CHECKING:
    from triggerd.fanout.events.buses import Authorize, Bus, EventsApi, Rule

__all__ = ["PAGE", "start_replay"]

log = logging.getLogger("triggerd.events")

#: Archived events read, matched and committed at a time.
PAGE: Final = 500
_NAME: Final = re.compile(r"^[\.\-_A-Za-z0-9]{1,64}$")
_KEYS: Final = frozenset(
    {"ReplayName", "Description", "EventSourceArn", "EventStartTime", "EventEndTime", "Destination"}
)


async def start_replay(
    api: EventsApi, params: dict[str, Any], authorize: Authorize
) -> dict[str, Any]:
    extra = sorted(set(params) - _KEYS)
    if extra:
        raise EventsError("SerializationException", f"Unknown member {extra[0][:100]!r}")
    name = params.get("ReplayName")
    if not isinstance(name, str) or not _NAME.match(name):
        raise EventsError("ValidationException", "ReplayName: 1-64 of letters, digits, . - _")
    arn = params.get("EventSourceArn")
    prefix = api.archive_arn("")
    if not isinstance(arn, str) or not arn.startswith(prefix) or len(arn) > 1600:
        raise EventsError(
            "ValidationException", f"EventSourceArn must be an archive ARN, {prefix}NAME"
        )
    # The caller's policy first: whether an archive exists is not told to who may not replay.
    authorize("events:StartReplay", arn)
    bus = _archive_bus(api, arn[len(prefix) :])
    since = _time(params.get("EventStartTime"), "EventStartTime")
    until = _time(params.get("EventEndTime"), "EventEndTime")
    if until <= since:
        raise EventsError("ValidationException", "EventEndTime must be after EventStartTime")
    rules = _rules(bus, params.get("Destination"))
    try:
        done = await _replay(api, bus, rules, name, since, until)
    except StateStoreError as exc:
        raise EventsError("InternalException", f"The replay stopped: {exc}", 500) from None
    reason = f"{done.events} events replayed, {done.invocations} invocations queued"
    if done.failed:
        reason += f"; {done.failed} events not delivered ({done.first_error})"
    return {
        "ReplayArn": f"arn:aws:events:{api.region}:{api.account_id}:replay/{name}",
        "State": "FAILED" if done.failed else "COMPLETED",
        "StateReason": reason,
        "ReplayStartTime": time.time(),
    }


def _archive_bus(api: EventsApi, archive: str) -> Bus:
    for bus in api.buses().values():
        if bus.config.archive is not None and bus.config.archive_name == archive:
            return bus
    raise EventsError("ResourceNotFoundException", f"Archive {archive[:64]} does not exist.")


def _time(value: Any, key: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    raise EventsError("ValidationException", f"{key} is required: a timestamp")


def _rules(bus: Bus, destination: Any) -> list[Rule]:
    if not isinstance(destination, dict) or not isinstance(destination.get("Arn"), str):
        raise EventsError("ValidationException", "Destination.Arn (the bus's ARN) is required")
    if destination["Arn"] != bus.arn:
        raise EventsError(
            "ValidationException", f"Destination.Arn must be the archive's own bus, {bus.arn}"
        )
    enabled = [r for r in bus.rules if r.config.state == "ENABLED"]
    wanted = destination.get("FilterArns")
    if wanted is None:
        return enabled
    if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
        raise EventsError("ValidationException", "Destination.FilterArns must be rule ARNs")
    known = {r.arn: r for r in bus.rules}
    unknown = [a for a in wanted if a not in known]
    if unknown:
        raise EventsError("ResourceNotFoundException", f"Rule {unknown[0][:200]} does not exist.")
    return [r for r in enabled if r.arn in set(wanted)]


@dataclass(slots=True)
class _Done:
    events: int = 0
    invocations: int = 0
    failed: int = 0
    first_error: str = ""


async def _replay(
    api: EventsApi, bus: Bus, rules: list[Rule], name: str, since: float, until: float
) -> _Done:
    archive = api.archive_store()
    after, done = 0, _Done()
    while True:
        page = await archive.archived_events(
            bus.config.name, since=since, until=until, after_id=after, limit=PAGE
        )
        if not page:
            return done
        queued = []
        now = time.time()
        failed_before = done.failed
        for archived in page:
            event = orjson.loads(archived.event)
            event["replay-name"] = name
            ingestion = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(archived.ingested_at))
            trace = trace_id_for(None, now)
            try:
                queued += api.route(rules, event, orjson.dumps(event), now, ingestion, trace)
            except EventsError as exc:
                done.failed += 1
                done.first_error = done.first_error or exc.message
                log.warning(
                    "events.replay_skipped",
                    extra={"replay": name, "event_id": archived.event_id, "error": exc.message},
                )
        await api.queue(queued)
        done.events += len(page) - (done.failed - failed_before)
        done.invocations += len(queued)
        after = page[-1].id
