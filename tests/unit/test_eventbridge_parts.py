"""EventBridge's pieces without a daemon: target input (JSONPath, templates and AWS's quoting
rules), PutEvents entry checks and sizes, the bus config's errors, and the API over a fake
state store (one transaction per call, InternalFailure when the store refuses)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from triggerd.config.buses import EventBusConfig, bus_problems
from triggerd.events.eventbridge import (
    InputError,
    RuleContext,
    compile_json_path,
    compile_target_input,
)
from triggerd.fanout.events.buses import EventsApi
from triggerd.fanout.events.entries import (
    MAX_DETAIL_DEPTH,
    MAX_TOTAL_BYTES,
    Accepted,
    Refused,
    bus_name_of,
    check_entries,
    entry_size,
)
from triggerd.fanout.events.errors import EventsError
from triggerd.state.base import NewEvent
from triggerd.state.sqlite import StateStoreError
from triggerd.telemetry.metrics import Metrics

EVENT: dict[str, Any] = {
    "version": "0",
    "id": "e-1",
    "detail-type": "Order Placed",
    "source": "com.shop",
    "account": "123456789012",
    "time": "2024-05-01T12:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:x"],
    "detail": {
        "id": 7,
        "name": 'Ann "A" \\ B',
        "items": [{"sku": "a", "n": 1}, {"sku": "b", "n": 2}],
        "dash-key": {"with/slash": True},
        "nested": {"deep": {"x": [10, 20]}},
    },
}
EVENT_BYTES = orjson.dumps(EVENT)
CTX = RuleContext("my-rule", "arn:aws:events:us-east-1:123456789012:rule/my-rule", "T")


def render(**settings: Any) -> Any:
    return orjson.loads(compile_target_input(**settings).render(EVENT, EVENT_BYTES, CTX))


# ---- JSONPath -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", EVENT),
        ("$.detail.id", 7),
        ("$.detail-type", "Order Placed"),
        ("$.detail.items[1].sku", "b"),
        ("$.detail.items[*].n", [1, 2]),
        ("$.detail.items.*.sku", ["a", "b"]),
        ("$.detail.dash-key.with/slash", True),
        ("$['detail']['nested'].deep.x[0]", 10),
    ],
)
def test_json_paths_reach_what_eventbridge_reaches(path: str, expected: Any) -> None:
    assert compile_json_path(path)(EVENT) == expected


@pytest.mark.parametrize("path", ["detail", "$..x", "$.a[", "$.a[1:2]", "$.a..b", "$x"])
def test_json_paths_eventbridge_refuses_are_refused(path: str) -> None:
    with pytest.raises(InputError):
        compile_json_path(path)


# ---- Target input ---------------------------------------------------------------------------


def test_no_input_settings_pass_the_event_itself() -> None:
    target = compile_target_input()
    assert target.passes_event
    assert target.render(EVENT, EVENT_BYTES, CTX) is EVENT_BYTES


def test_constant_input_and_input_path() -> None:
    assert render(input_json='{"a": [1, 2]}') == {"a": [1, 2]}
    assert render(input_path="$.detail.items[0]") == {"sku": "a", "n": 1}
    assert render(input_path="$.detail.absent") is None


def test_constant_input_is_sent_as_written() -> None:
    text = '{"id": 123456789012345678901234567890, "price": 1.10}'
    assert compile_target_input(input_json=text).render(EVENT, EVENT_BYTES, CTX) == text.encode()


def test_template_quoting_follows_aws_rules() -> None:
    template = (
        '{"id": <id>, "text": "<name> has <id> and <items>", "items": <items>, '
        '"gone": <gone>, "gone_text": "[<gone>]", "literal": "<not-a-variable>", '
        '"rule": "<aws.events.rule-name>", "arn": <aws.events.rule-arn>, '
        '"at": "<aws.events.event.ingestion-time>"}'
    )
    paths = {
        "id": "$.detail.id",
        "name": "$.detail.name",
        "items": "$.detail.items[*].sku",
        "gone": "$.detail.nothing",
    }
    assert render(paths_map=paths, template=template) == {
        "id": 7,
        "text": 'Ann "A" \\ B has 7 and ["a","b"]',
        "items": ["a", "b"],
        "gone": None,
        "gone_text": "[]",
        "literal": "<not-a-variable>",
        "rule": "my-rule",
        "arn": CTX.rule_arn,
        "at": "T",
    }


def test_the_whole_event_variables() -> None:
    out = render(template='{"e": <aws.events.event>, "j": <aws.events.event.json>}')
    assert out["j"] == EVENT
    assert out["e"] == {k: v for k, v in EVENT.items() if k != "detail"}


def test_a_text_template_is_a_json_string() -> None:
    out = render(paths_map={"n": "$.detail.name"}, template='"<n> ordered"')
    assert out == 'Ann "A" \\ B ordered'


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"template": "<n> ordered", "paths_map": {"n": "$.x"}}, "does not render JSON"),
        ({"template": '{"e": "<aws.events.event>"}'}, "outside quotes"),
        ({"template": "1", "paths_map": {"aws.events.rule-name": "$"}}, "reserved"),
        ({"template": "1", "paths_map": {"bad name": "$"}}, "variable name"),
        ({"template": "1", "paths_map": {"a": "detail"}}, "input_paths_map.a"),
        ({"paths_map": {"a": "$"}}, "input_template: required"),
        ({"input_json": "{"}, "input: not valid JSON"),
        ({"input_json": "1", "input_path": "$"}, "only one of"),
        ({"input_path": "$.a[x]"}, "input_path"),
        ({"template": "x" * 9000}, "at most 8192"),
    ],
)
def test_bad_input_settings_name_the_key(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(InputError, match=problem.replace("[", r"\[")):
        compile_target_input(**settings)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(value=json_values)
def test_unquoted_variables_carry_any_json_value(value: Any) -> None:
    target = compile_target_input(paths_map={"v": "$.detail.v"}, template='{"v": <v>}')
    event = {**EVENT, "detail": {"v": value}}
    out = orjson.loads(target.render(event, orjson.dumps(event), CTX))
    assert out == {"v": value}


@given(value=json_values, before=st.text(alphabet="ab <>{}", max_size=5))
def test_quoted_variables_always_render_valid_json_strings(value: Any, before: str) -> None:
    template = orjson.dumps({"t": before + "|"}).decode().replace("|", "<v>")
    target = compile_target_input(paths_map={"v": "$.detail.v"}, template=template)
    event = {**EVENT, "detail": {"v": value}}
    out = orjson.loads(target.render(event, orjson.dumps(event), CTX))
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    assert out == {"t": before + text}


# ---- PutEvents entries ----------------------------------------------------------------------


def entry(**over: Any) -> dict[str, Any]:
    return {"Source": "com.shop", "DetailType": "Order", "Detail": '{"a": 1}', **over}


def check(entries: Any) -> list[Accepted | Refused]:
    return check_entries(entries, region="us-east-1", account_id="123456789012", now=1714564800.9)


def test_an_accepted_entry_becomes_the_event_parts() -> None:
    (got,) = check([entry(Resources=["arn:r"], TraceHeader="Root=1-abc")])
    assert got == Accepted(
        "default", "com.shop", "Order", {"a": 1}, ("arn:r",), "2024-05-01T12:00:00Z", "Root=1-abc"
    )


@pytest.mark.parametrize(
    ("time", "expected"),
    [(1714564800.5, "2024-05-01T12:00:00Z"), ("2024-05-01T12:00:07.9Z", "2024-05-01T12:00:07Z")],
)
def test_time_is_whole_seconds_in_utc(time: Any, expected: str) -> None:
    (got,) = check([entry(Time=time)])
    assert isinstance(got, Accepted) and got.time == expected


@pytest.mark.parametrize(
    ("over", "code", "named"),
    [
        ({"Source": None}, "InvalidArgument", "Source"),
        ({"Source": "x" * 257}, "InvalidArgument", "Source"),
        ({"DetailType": ""}, "InvalidArgument", "DetailType"),
        ({"Detail": None}, "InvalidArgument", "Detail"),
        ({"Detail": "[]"}, "MalformedDetail", ""),
        ({"Detail": '"text"'}, "MalformedDetail", ""),
        ({"Resources": "arn:x"}, "InvalidArgument", "Resources"),
        ({"Time": "yesterday"}, "InvalidArgument", "Time"),
        ({"EventBusName": "bad name"}, "InvalidArgument", "EventBusName"),
        ({"TraceHeader": 5}, "InvalidArgument", "TraceHeader"),
        ({"Extra": 1}, "InvalidArgument", "Extra"),
        ({"Source": "aws.s3"}, "NotAuthorizedForSourceException", ""),
    ],
)
def test_entries_are_refused_one_by_one(over: dict[str, Any], code: str, named: str) -> None:
    fields = {k: v for k, v in entry(**over).items() if v is not None}
    good, bad = check([entry(), fields])
    assert isinstance(good, Accepted)
    assert isinstance(bad, Refused) and bad.code == code
    assert named in bad.message


@pytest.mark.parametrize("entries", [[], [entry()] * 11, "x", None, [1]])
def test_the_request_is_refused_without_1_to_10_entry_objects(entries: Any) -> None:
    with pytest.raises(EventsError) as err:
        check(entries)
    assert err.value.code in ("ValidationException", "SerializationException")


def test_size_is_counted_as_aws_documents_it() -> None:
    e = entry(Detail='{"é": 1}', Resources=["arn:1", "arn:22"], Time=1)
    assert entry_size(e) == len("com.shop") + len("Order") + len('{"é": 1}'.encode()) + 11 + 14
    detail = '{"b": "' + "y" * (MAX_TOTAL_BYTES - 1 - 1 - 9) + '"}'
    check([{"Source": "a", "DetailType": "b", "Detail": detail}])  # exactly at the limit
    with pytest.raises(EventsError, match="over the limit"):
        check([{"Source": "a", "DetailType": "bb", "Detail": detail}])


def test_bus_names_and_arns() -> None:
    arn = "arn:aws:events:us-east-1:123456789012:event-bus/shop"
    assert bus_name_of(arn, "us-east-1", "123456789012") == "shop"
    assert bus_name_of("shop", "us-east-1", "123456789012") == "shop"
    assert bus_name_of(arn, "eu-west-1", "123456789012") is None
    assert bus_name_of("a b", "us-east-1", "123456789012") is None


# ---- Config ---------------------------------------------------------------------------------


def bus(**rule: Any) -> dict[str, Any]:
    base = {"name": "r", "event_pattern": {"source": ["x"]}, "targets": [{"function": "f"}]}
    return {"rules": [{**base, **rule}]}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (bus(event_pattern={"source": "x"}), "invalid event pattern at source"),
        (bus(event_pattern={"a": [{"nope": 1}]}), "unknown operator"),
        (bus(event_pattern="{"), "not valid JSON"),
        (bus(targets=[]), "at least 1"),
        (bus(targets=[{"function": "f"}] * 6), "at most 5"),
        (bus(targets=[{"function": "f"}, {"function": "f"}]), "duplicate target id"),
        (bus(targets=[{"function": "f", "input_path": "x"}]), "input_path"),
        (bus(state="OFF"), "ENABLED"),
        (bus(name="a b"), "pattern"),
        ({"name": "x y", "rules": []}, "pattern"),
    ],
)
def test_bad_bus_config_names_the_problem(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        EventBusConfig.model_validate(data)


def test_targets_must_name_known_functions_and_buses_be_unique() -> None:
    buses = [EventBusConfig.model_validate(bus()), EventBusConfig.model_validate(bus())]
    assert bus_problems(buses, {"f": object()}) == [
        "event_buses.1.name: bus 'default' is declared twice"
    ]
    assert "event_buses.0.rules.0.targets.0.function: no function 'f'" in bus_problems(buses, {})


# ---- The API over a fake store ---------------------------------------------------------------


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.batches: list[list[NewEvent]] = []

    async def enqueue(
        self,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        if self.fail:
            raise StateStoreError("disk full")
        self.batches.append(list(events))


class FakeQueue:
    def __init__(self, name: str) -> None:
        self.name = name
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def api(
    store: FakeStore, queues: dict[str, FakeQueue], metrics: Metrics | None = None
) -> EventsApi:
    config = [
        EventBusConfig.model_validate(
            {
                "rules": [
                    {
                        "name": "all",
                        "event_pattern": {"source": [{"prefix": ""}]},
                        "targets": [{"function": "f"}, {"function": "g", "input": '"x"'}],
                    }
                ]
            }
        )
    ]
    return EventsApi(
        lambda: config,
        region="us-east-1",
        account_id="123456789012",
        state=lambda: store,  # type: ignore[arg-type, return-value]
        queues=queues,
        clock=lambda: 1714564800.0,
        metrics=metrics,
    )


def allow(action: str, resource: str) -> None:
    return None


async def test_one_call_is_one_transaction_and_wakes_each_queue() -> None:
    store, queues = FakeStore(), {"f": FakeQueue("invoke-api:f"), "g": FakeQueue("invoke-api:g")}
    out = await api(store, queues).call(
        "PutEvents", {"Entries": [entry(), entry(Source="b"), entry(Detail="[]")]}, allow
    )
    assert out["FailedEntryCount"] == 1
    assert len(store.batches) == 1 and len(store.batches[0]) == 4
    assert {e.trigger for e in store.batches[0]} == {"invoke-api:f", "invoke-api:g"}
    assert [orjson.loads(e.payload) for e in store.batches[0] if e.function == "g"] == ["x", "x"]
    first = orjson.loads(store.batches[0][0].payload)
    assert first["id"] == out["Entries"][0]["EventId"] and first["time"] == "2024-05-01T12:00:00Z"
    assert queues["f"].woken == queues["g"].woken == 1


async def test_a_store_that_refuses_fails_the_entries_with_internal_failure() -> None:
    queues = {"f": FakeQueue("f"), "g": FakeQueue("g")}
    out = await api(FakeStore(fail=True), queues).call("PutEvents", {"Entries": [entry()]}, allow)
    assert out == {
        "FailedEntryCount": 1,
        "Entries": [
            {
                "ErrorCode": "InternalFailure",
                "ErrorMessage": "The event could not be stored; retry it.",
            }
        ],
    }
    assert queues["f"].woken == 0


async def test_authorization_is_asked_per_bus_before_anything_is_queued() -> None:
    store = FakeStore()
    asked: list[tuple[str, str]] = []

    def deny(action: str, resource: str) -> None:
        asked.append((action, resource))
        raise PermissionError(resource)

    with pytest.raises(PermissionError):
        await api(store, {}).call("PutEvents", {"Entries": [entry()]}, deny)
    assert asked == [
        ("events:PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/default")
    ]
    assert store.batches == []


@pytest.mark.parametrize(
    ("operation", "params", "code"),
    [
        ("DeleteRule", {}, "UnknownOperationException"),
        ("PutEvents", [], "SerializationException"),
        ("PutEvents", {"Entries": [entry()], "EndpointId": "x"}, "ValidationException"),
        ("ListRules", {"EventBusName": "nope"}, "ResourceNotFoundException"),
        ("ListRules", {"Limit": 0}, "ValidationException"),
        ("ListRules", {"NextToken": "abc"}, "ValidationException"),
        ("DescribeRule", {}, "ValidationException"),
    ],
)
async def test_bad_calls_are_aws_errors(operation: str, params: Any, code: str) -> None:
    with pytest.raises(EventsError) as err:
        await api(FakeStore(), {}).call(operation, params, allow)
    assert err.value.code == code and err.value.status == 400


async def test_entries_and_matches_are_counted_without_a_series_per_unknown_bus() -> None:
    metrics = Metrics()
    queues = {"f": FakeQueue("f"), "g": FakeQueue("g")}
    entries = [entry(), entry(Detail="[]"), entry(EventBusName="nope-1"), entry(EventBusName="x")]
    await api(FakeStore(), queues, metrics).call("PutEvents", {"Entries": entries}, allow)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    entries_total = "triggerd_eventbridge_entries_total"
    assert value(entries_total, bus="default", outcome="accepted") == 1
    assert value(entries_total, bus="default", outcome="MalformedDetail") == 1
    assert value(entries_total, bus="unknown", outcome="ResourceNotFoundException") == 2
    matched = "triggerd_eventbridge_matched_events_total"
    assert value(matched, bus="default", rule="all") == 1


# ---- Patterns over the event envelope ------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ({"detail-type": ["Order Placed"]}, True),
        ({"resources": ["arn:x"]}, True),
        ({"resources": [{"prefix": "arn:y"}]}, False),
        ({"detail": {"items": {"sku": ["b"]}}}, True),
        ({"detail": {"items": {"sku": ["b"], "n": [1]}}}, False),  # both in one element
        ({"detail": {"id": [{"numeric": [">=", 7, "<", 8]}]}}, True),
        ({"detail": {"id": ["7"]}}, False),  # a string never equals a number
        ({"detail": {"absent": [{"exists": False}]}}, True),
        ({"detail": {"name": [{"wildcard": "Ann*B"}]}}, True),
        ({"source": [{"anything-but": {"prefix": ["com.", "org."]}}]}, False),
        ({"$or": [{"source": ["x"]}, {"detail": {"nested": {"deep": {"x": [20]}}}}]}, True),
        ({"account": [{"equals-ignore-case": "123456789012"}], "region": ["eu-west-1"]}, False),
    ],
)
def test_rule_patterns_match_the_event_envelope(pattern: dict[str, Any], matches: bool) -> None:
    rule = EventBusConfig.model_validate(bus(event_pattern=pattern)).rules[0]
    assert rule.compiled_pattern().matches(EVENT) is matches


# ---- Any request: an answer or a 4xx, never an exception of another kind --------------------

any_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=12),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
entry_like = st.fixed_dictionaries(
    {},
    optional={
        "Source": st.one_of(st.text(max_size=10), any_json),
        "DetailType": st.one_of(st.text(max_size=10), any_json),
        "Detail": st.one_of(st.just('{"a": 1}'), st.text(max_size=10), any_json),
        "Resources": any_json,
        "Time": any_json,
        "EventBusName": st.one_of(st.just("default"), any_json),
        "TraceHeader": any_json,
    },
)


@hypothesis_settings(max_examples=60)
@given(
    operation=st.sampled_from(
        ["PutEvents", "ListRules", "DescribeRule", "ListTargetsByRule", "ListEventBuses", "X"]
    ),
    params=st.one_of(
        any_json,
        st.fixed_dictionaries({"Entries": st.lists(entry_like, max_size=11)}),
        st.dictionaries(
            st.sampled_from(["Name", "Rule", "EventBusName", "Limit", "NextToken", "NamePrefix"]),
            any_json,
            max_size=4,
        ),
    ),
)
async def test_any_request_gets_an_answer_or_a_client_error(operation: str, params: Any) -> None:
    queues = {"f": FakeQueue("f"), "g": FakeQueue("g")}
    try:
        out = await api(FakeStore(), queues).call(operation, params, allow)
    except EventsError as exc:
        assert 400 <= exc.status < 500
        return
    if operation == "PutEvents":
        assert len(out["Entries"]) == len(params["Entries"])
        assert out["FailedEntryCount"] == sum("ErrorCode" in e for e in out["Entries"])


# ---- A function's async_invocation settings -------------------------------------------------


def async_config(settings: dict[str, Any], functions: tuple[str, ...] = ("f",)) -> list[str]:
    from triggerd.config.load import validate_data
    from triggerd.config.plugins import Registry
    from triggerd.delivery.destinations import file_plugin
    from triggerd.functions.backends.http import plugin as http_plugin
    from triggerd.types import ConfigError

    reg = Registry()
    reg.register("backend", "http", http_plugin)
    reg.register("destination", "file", file_plugin)
    data = {
        "daemon": {"listen": "", "control_listen": "127.0.0.1:0"},
        "functions": {f: {"backend": "http", "url": "http://127.0.0.1:1/"} for f in functions},
        "async_invocation": settings,
    }
    try:
        validate_data(data, reg, Path("."))
    except ConfigError as exc:
        return list(exc.problems)
    return []


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"g": {}}, "async_invocation.g: no function 'g'"),
        ({"f": {"maximum_retry_attempts": 3}}, "async_invocation.f.maximum_retry_attempts"),
        ({"f": {"maximum_event_age_s": 30}}, "async_invocation.f.maximum_event_age_s"),
        ({"f": {"on_failure": {"type": "nope"}}}, "async_invocation.f.on_failure.type"),
        ({"f": {"retries": 1}}, "async_invocation.f.retries"),
    ],
)
def test_bad_async_invocation_settings_name_the_key(settings: Any, problem: str) -> None:
    problems = async_config(settings)
    assert any(p.startswith(problem) for p in problems), problems


def test_async_invocation_settings_are_accepted() -> None:
    settings = {"f": {"maximum_retry_attempts": 0, "on_failure": {"type": "file", "path": "x"}}}
    assert async_config(settings) == []


async def test_a_detail_nested_too_deep_is_refused_on_its_own() -> None:
    store, queues = FakeStore(), {"f": FakeQueue("invoke-api:f"), "g": FakeQueue("invoke-api:g")}
    deep = '{"a": ' + "[" * 300 + "1" + "]" * 300 + "}"
    at_limit = '{"a": ' + "[" * (MAX_DETAIL_DEPTH - 1) + "1" + "]" * (MAX_DETAIL_DEPTH - 1) + "}"
    out = await api(store, queues).call(
        "PutEvents", {"Entries": [entry(Detail=deep), entry(Detail=at_limit)]}, allow
    )
    assert out["FailedEntryCount"] == 1
    assert out["Entries"][0]["ErrorCode"] == "MalformedDetail"
    assert "nested deeper" in out["Entries"][0]["ErrorMessage"]
    assert "EventId" in out["Entries"][1]
    assert len(store.batches[0]) == 2
