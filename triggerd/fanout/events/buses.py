"""The event buses of a daemon and EventBridge's operations on them.

`EventsApi.call(operation, params, authorize)` serves PutEvents, ListEventBuses, ListRules,
DescribeRule and ListTargetsByRule; the HTTP side (`triggerd.http.events_api`) has checked
the signature and passes `authorize(action, resource_arn)`, which raises when the caller's
policy does not allow the action.

PutEvents turns each accepted entry into an EventBridge event, matches it against every
enabled rule of its bus and renders each matching target's input; all the invocations of
one call are committed to the state store in one transaction, on the target functions'
queues of asynchronous invocations, before the answer (so an `EventId` means the event will
be delivered, with Lambda's retries, maximum event age and on-failure destination). When the
store cannot take them, the entries that had targets fail with `InternalFailure` (retryable,
as in AWS) and nothing of them is queued."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from triggerd.config.buses import DEFAULT_BUS, EventBusConfig, RuleConfig, RuleTarget
from triggerd.delivery.settle import settle
from triggerd.events.eventbridge import RuleContext, TargetInput, event_envelope
from triggerd.events.filters import CompiledFilter
from triggerd.events.tracing import trace_id_for
from triggerd.fanout.events.entries import Refused, bus_name_of, check_entries
from triggerd.fanout.events.errors import EventsError
from triggerd.state.base import ArchivedEvent, EventArchive, NewEvent, StateStore
from triggerd.state.sqlite import StateStoreError
from triggerd.telemetry.metrics import Metrics
from triggerd.types import MAX_ASYNC_PAYLOAD

__all__ = ["Authorize", "Bus", "EventsApi", "Rule", "TargetQueue"]

log = logging.getLogger("triggerd.events")

#: `authorize(action, resource_arn)`: raises when the caller may not.
Authorize = Callable[[str, str], None]
_MAX_LIMIT: Final = 100
_PRUNE_EVERY_S: Final = 3600.0


def _archive_of(state: StateStore) -> EventArchive:
    if not isinstance(state, EventArchive):
        raise StateStoreError("this state store keeps no event archives")
    return state


class TargetQueue(Protocol):
    """A function's durable queue of asynchronous invocations (the Invoke API's)."""

    @property
    def name(self) -> str: ...

    def wake(self) -> None:
        """Look for new events now (they were committed by someone else)."""


@dataclass(frozen=True, slots=True)
class _Target:
    config: RuleTarget
    input: TargetInput


@dataclass(frozen=True, slots=True)
class Rule:
    bus: str
    config: RuleConfig
    arn: str
    pattern: CompiledFilter
    targets: tuple[_Target, ...]


@dataclass(frozen=True, slots=True)
class Bus:
    config: EventBusConfig
    arn: str
    rules: tuple[Rule, ...]
    #: Which events the archive keeps; None without an archive.
    archive: CompiledFilter | None


@dataclass(slots=True)
class _Pending:
    """What one accepted entry commits: its invocations and its archived copy."""

    index: int
    bus: str
    deliveries: list[NewEvent]
    archived: ArchivedEvent | None


class EventsApi:
    """EventBridge's API over the buses `buses()` returns (read on every call, so a reloaded
    config applies at once; compiled once per config)."""

    def __init__(
        self,
        buses: Callable[[], Sequence[EventBusConfig]],
        *,
        region: str,
        account_id: str,
        state: Callable[[], StateStore | None],
        queues: Mapping[str, TargetQueue],
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._source = buses
        self._metrics = metrics
        self.region = region
        self.account_id = account_id
        self._state = state
        self._queues = queues
        self._clock = clock
        self._compiled_from: Sequence[EventBusConfig] | None = None
        self._buses: dict[str, Bus] = {}
        #: Per bus: when its archive was last pruned of events past their retention.
        self._pruned_at: dict[str, float] = {}

    # ----------------------------------------------------------------------------------------
    # Names

    def bus_arn(self, bus: str) -> str:
        return f"arn:aws:events:{self.region}:{self.account_id}:event-bus/{bus}"

    def rule_arn(self, bus: str, rule: str) -> str:
        prefix = f"arn:aws:events:{self.region}:{self.account_id}:rule/"
        return prefix + (rule if bus == DEFAULT_BUS else f"{bus}/{rule}")

    def archive_arn(self, name: str) -> str:
        return f"arn:aws:events:{self.region}:{self.account_id}:archive/{name}"

    def function_arn(self, function: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{function}"

    def buses(self) -> dict[str, Bus]:
        configs = self._source()
        if configs is not self._compiled_from:
            self._buses = {b.name: self._compile(b) for b in configs}
            self._compiled_from = configs
        return self._buses

    def _compile(self, bus: EventBusConfig) -> Bus:
        rules = tuple(
            Rule(
                bus.name,
                rule,
                self.rule_arn(bus.name, rule.name),
                rule.compiled_pattern(),
                tuple(_Target(t, t.compiled_input()) for t in rule.targets),
            )
            for rule in bus.rules
        )
        archive = bus.archive.compiled_pattern() if bus.archive is not None else None
        return Bus(bus, self.bus_arn(bus.name), rules, archive)

    # ----------------------------------------------------------------------------------------
    # Dispatch

    async def call(
        self, operation: str, params: Any, authorize: Authorize, trace_header: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise EventsError("SerializationException", "The request body must be a JSON object")
        if operation == "PutEvents":
            return await self.put_events(params, authorize, trace_header)
        if operation == "StartReplay":
            from triggerd.fanout.events.replay import start_replay

            return await start_replay(self, params, authorize)
        handler = self._READS.get(operation)
        if handler is None:
            raise EventsError(
                "UnknownOperationException", f"{operation[:100]!r} is not an operation served here"
            )
        return handler(self, params, authorize)

    # ----------------------------------------------------------------------------------------
    # PutEvents

    async def put_events(
        self, params: dict[str, Any], authorize: Authorize, trace_header: str | None = None
    ) -> dict[str, Any]:
        extra = sorted(set(params) - {"Entries", "EndpointId"})
        if extra:
            raise EventsError("SerializationException", f"Unknown member {extra[0][:100]!r}")
        if params.get("EndpointId") is not None:
            raise EventsError(
                "ValidationException", "EndpointId (global endpoints) is not supported here"
            )
        now = self._clock()
        checked = check_entries(
            params.get("Entries"), region=self.region, account_id=self.account_id, now=now
        )
        # IAM's check comes first, for every bus the entries name (also those refused for
        # something else): a key without PutEvents learns nothing about the entries.
        for bus_name in sorted(self._named_buses(params["Entries"])):
            authorize("events:PutEvents", self.bus_arn(bus_name))
        buses = self.buses()
        ingestion = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        results: list[dict[str, str]] = []
        pending: list[_Pending] = []
        for index, entry in enumerate(checked):
            if isinstance(entry, Refused):
                results.append(entry.result())
                continue
            bus = buses.get(entry.bus)
            if bus is None:
                missing = f"Event bus {entry.bus} does not exist."
                results.append(Refused("ResourceNotFoundException", missing).result())
                continue
            event_id = str(uuid.uuid4())
            event = event_envelope(
                event_id=event_id,
                detail_type=entry.detail_type,
                source=entry.source,
                account=self.account_id,
                time=entry.time,
                region=self.region,
                resources=entry.resources,
                detail=entry.detail,
            )
            event_bytes = orjson.dumps(event)
            trace_id = trace_id_for(entry.trace_header or trace_header, now)
            try:
                deliveries = self.route(bus.rules, event, event_bytes, now, ingestion, trace_id)
            except EventsError as exc:
                results.append(Refused(exc.code, exc.message).result())
                continue
            results.append({"EventId": event_id})
            archived = None
            if bus.archive is not None and bus.archive.matches(event):
                archived = ArchivedEvent(event_id, now, event_bytes)
            if deliveries or archived is not None:
                pending.append(_Pending(index, bus.config.name, deliveries, archived))
        await self._commit(pending, results)
        await self._prune(buses, now)
        self._count(params["Entries"], results, buses)
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedEntryCount": failed, "Entries": results}

    def _named_buses(self, entries: list[dict[str, Any]]) -> set[str]:
        names = set()
        for entry in entries:
            raw = entry.get("EventBusName", DEFAULT_BUS)
            name = bus_name_of(raw, self.region, self.account_id) if isinstance(raw, str) else None
            if name is not None:
                names.add(name)
        return names or {DEFAULT_BUS}

    def _count(
        self,
        entries: list[dict[str, Any]],
        results: Sequence[dict[str, str]],
        buses: Mapping[str, Bus],
    ) -> None:
        if self._metrics is None:
            return
        counter = self._metrics.eventbridge_entries
        for entry, result in zip(entries, results, strict=True):
            named = self._named_buses([entry])
            # A hostile caller may name any bus: only declared ones get their own series.
            bus = next(iter(named)) if named <= buses.keys() else "unknown"
            counter.labels(bus, result.get("ErrorCode", "accepted")).inc()

    def route(
        self,
        rules: Sequence[Rule],
        event: dict[str, Any],
        event_bytes: bytes,
        now: float,
        ingestion: str,
        trace_id: str,
    ) -> list[NewEvent]:
        """The invocations of the event's matching rules' targets."""
        out: list[NewEvent] = []
        for rule in rules:
            if rule.config.state != "ENABLED" or not rule.pattern.matches(event):
                continue
            if self._metrics is not None:
                self._metrics.eventbridge_matched.labels(rule.bus, rule.config.name).inc()
            ctx = RuleContext(rule.config.name, rule.arn, ingestion)
            for target in rule.targets:
                function = target.config.function
                queue = self._queues.get(function)
                if queue is None:
                    log.error(
                        "events.no_queue",
                        extra={"function": function, "rule": rule.config.name},
                    )
                    raise EventsError("InternalFailure", "The target's queue is not running.")
                payload = target.input.render(event, event_bytes, ctx)
                if len(payload) > MAX_ASYNC_PAYLOAD:
                    raise EventsError(
                        "InternalFailure",
                        f"Rule {rule.config.name} target {target.config.target_id}: the "
                        f"transformed input is over {MAX_ASYNC_PAYLOAD} bytes.",
                    )
                out.append(
                    NewEvent(
                        trigger=queue.name,
                        function=function,
                        payload=payload,
                        request_id=str(uuid.uuid4()),
                        enqueued_at=now,
                        available_at=now,
                        trace_id=trace_id,
                    )
                )
        return out

    async def _commit(self, pending: list[_Pending], results: list[dict[str, str]]) -> None:
        """Store the invocations and archived copies of one call together (the writes join
        one group commit); on failure the entries concerned fail with InternalFailure."""
        if not pending:
            return
        events = [e for p in pending for e in p.deliveries]
        archives: dict[str, list[ArchivedEvent]] = {}
        for p in pending:
            if p.archived is not None:
                archives.setdefault(p.bus, []).append(p.archived)
        try:
            await settle(self._store(events, archives))
        except StateStoreError as exc:
            log.error("events.not_queued", extra={"events": len(events), "error": str(exc)})
            for p in pending:
                results[p.index] = Refused(
                    "InternalFailure", "The event could not be stored; retry it."
                ).result()
            return
        for name in {e.function for e in events}:
            queue = self._queues.get(name)
            if queue is not None:
                queue.wake()
        log.debug("events.queued", extra={"events": len(events)})

    async def queue(self, events: list[NewEvent]) -> None:
        """Commit invocations (a replay's) and wake their queues; StateStoreError if the
        store refuses them."""
        if events:
            await settle(self._store(events, {}))
            for name in {e.function for e in events}:
                queue = self._queues.get(name)
                if queue is not None:
                    queue.wake()

    def archive_store(self) -> EventArchive:
        """The store's archive capability; StateStoreError when it has none or is closed."""
        state = self._state()
        if state is None:
            raise StateStoreError("the state store is not open")
        return _archive_of(state)

    async def _store(
        self, events: list[NewEvent], archives: Mapping[str, list[ArchivedEvent]]
    ) -> None:
        state = self._state()
        if state is None:
            raise StateStoreError("the state store is not open")
        writes: list[Any] = [state.enqueue(events)] if events else []
        if archives:
            archive = _archive_of(state)
            writes += [archive.archive_events(bus, rows) for bus, rows in archives.items()]
        await asyncio.gather(*writes)

    async def _prune(self, buses: Mapping[str, Bus], now: float) -> None:
        """At most hourly per bus: drop archived events past the archive's retention."""
        for name, bus in buses.items():
            archive = bus.config.archive
            if archive is None or not archive.retention_days:
                continue
            if now - self._pruned_at.get(name, 0.0) < _PRUNE_EVERY_S:
                continue
            self._pruned_at[name] = now
            state = self._state()
            try:
                if state is None:
                    raise StateStoreError("the state store is not open")
                before = now - archive.retention_days * 86400
                gone = await settle(_archive_of(state).prune_archive(name, before))
            except StateStoreError as exc:
                log.warning("events.archive_not_pruned", extra={"bus": name, "error": str(exc)})
                continue
            if gone:
                log.info("events.archive_pruned", extra={"bus": name, "events": gone})

    # ----------------------------------------------------------------------------------------
    # Reads

    def _bus(self, params: dict[str, Any]) -> Bus:
        raw = params.get("EventBusName", DEFAULT_BUS)
        name = bus_name_of(raw, self.region, self.account_id) if isinstance(raw, str) else None
        if name is None:
            raise EventsError("ValidationException", "EventBusName must be a bus name or its ARN")
        bus = self.buses().get(name)
        if bus is None:
            raise EventsError("ResourceNotFoundException", f"Event bus {name} does not exist.")
        return bus

    def _rule(self, bus: Bus, name: Any) -> Rule:
        if not isinstance(name, str) or not name:
            raise EventsError("ValidationException", "The rule name is required")
        for rule in bus.rules:
            if rule.config.name == name:
                return rule
        raise EventsError(
            "ResourceNotFoundException",
            f"Rule {name[:64]} does not exist on EventBus {bus.config.name}.",
        )

    def list_event_buses(self, params: dict[str, Any], authorize: Authorize) -> dict[str, Any]:
        authorize("events:ListEventBuses", self.bus_arn("*"))
        prefix = _string(params, "NamePrefix")
        items = [
            _without_none(
                {"Name": b.config.name, "Arn": b.arn, "Description": b.config.description}
            )
            for b in self.buses().values()
            if b.config.name.startswith(prefix)
        ]
        return _page(items, "EventBuses", params)

    def list_rules(self, params: dict[str, Any], authorize: Authorize) -> dict[str, Any]:
        bus = self._bus(params)
        authorize("events:ListRules", bus.arn)
        prefix = _string(params, "NamePrefix")
        items = [self._describe(bus, r) for r in bus.rules if r.config.name.startswith(prefix)]
        return _page(items, "Rules", params)

    def describe_rule(self, params: dict[str, Any], authorize: Authorize) -> dict[str, Any]:
        bus = self._bus(params)
        rule = self._rule(bus, params.get("Name"))
        authorize("events:DescribeRule", rule.arn)
        return {**self._describe(bus, rule), "CreatedBy": self.account_id}

    def list_targets_by_rule(self, params: dict[str, Any], authorize: Authorize) -> dict[str, Any]:
        bus = self._bus(params)
        rule = self._rule(bus, params.get("Rule"))
        authorize("events:ListTargetsByRule", rule.arn)
        items = [self._target(t.config) for t in rule.targets]
        return _page(items, "Targets", params)

    @staticmethod
    def _describe(bus: Bus, rule: Rule) -> dict[str, Any]:
        return _without_none(
            {
                "Name": rule.config.name,
                "Arn": rule.arn,
                "EventPattern": rule.config.pattern_json,
                "State": rule.config.state,
                "Description": rule.config.description,
                "EventBusName": bus.config.name,
            }
        )

    def _target(self, target: RuleTarget) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Id": target.target_id,
            "Arn": self.function_arn(target.function),
        }
        if target.input_json is not None:
            out["Input"] = target.input_json
        if target.input_path is not None:
            out["InputPath"] = target.input_path
        if target.input_transformer is not None:
            out["InputTransformer"] = {
                "InputPathsMap": dict(target.input_transformer.input_paths_map),
                "InputTemplate": target.input_transformer.input_template,
            }
        return out

    _READS: Final[dict[str, Callable[[EventsApi, dict[str, Any], Authorize], dict[str, Any]]]] = {
        "ListEventBuses": list_event_buses,
        "ListRules": list_rules,
        "DescribeRule": describe_rule,
        "ListTargetsByRule": list_targets_by_rule,
    }


def _string(params: dict[str, Any], key: str) -> str:
    value = params.get(key, "")
    if not isinstance(value, str):
        raise EventsError("ValidationException", f"{key} must be a string")
    return value


def _without_none(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is not None}


def _page(items: list[dict[str, Any]], key: str, params: dict[str, Any]) -> dict[str, Any]:
    """One page of `items`: `Limit` (1-100) from the offset `NextToken` holds."""
    limit = params.get("Limit", _MAX_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= _MAX_LIMIT:
        raise EventsError("ValidationException", "Limit must be an integer from 1 to 100")
    token = params.get("NextToken")
    start = 0
    if token is not None:
        if not isinstance(token, str) or not token.isdigit() or len(token) > 9:
            raise EventsError("ValidationException", "NextToken is not valid")
        start = int(token)
    page: dict[str, Any] = {key: items[start : start + limit]}
    if start + limit < len(items):
        page["NextToken"] = str(start + limit)
    return page
