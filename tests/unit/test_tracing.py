"""Trace headers: fresh ids in X-Ray format, incoming headers kept only when well formed."""

from __future__ import annotations

import random
import re

import pytest

from triggerd.events.tracing import (
    MAX_TRACE_HEADER,
    for_function,
    new_root,
    new_trace_id,
    parse_trace_header,
    trace_id_for,
    xray_ids,
)

FRESH = re.compile(r"Root=1-([0-9a-f]{8})-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0")
NEW_ROOT = re.compile(r"Root=1-([0-9a-f]{8})-[0-9a-f]{24}")
ROOT = "Root=1-5759e988-bd862e3fe1be46a994272793"


def test_fresh_id_is_x_ray_format_with_the_epoch_seconds() -> None:
    m = FRESH.fullmatch(new_trace_id(1_700_000_000.7, random.Random(1)))
    assert m is not None and int(m.group(1), 16) == 1_700_000_000
    assert new_trace_id(1.0) != new_trace_id(1.0)


def test_well_formed_header_is_kept_with_its_fields_in_order() -> None:
    header = f"{ROOT};Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1|68fd508a:5"
    assert parse_trace_header(header) == header
    header = f"{ROOT};Parent=53995c3f42cd8ad8;Self=1-67891234-12456789abcdef0123456789"
    assert parse_trace_header(header) == header


def test_fresh_root_has_no_parent_and_no_sampling_decision() -> None:
    m = NEW_ROOT.fullmatch(new_root(1_700_000_000.7, random.Random(1)))
    assert m is not None and int(m.group(1), 16) == 1_700_000_000
    assert xray_ids(new_root(1.0))[1:] == (None, None)  # type: ignore[index]


def test_header_without_parent_keeps_none_until_the_function_gets_it() -> None:
    # SQS's AWSTraceHeader shape: a span joining it must not take an invented parent.
    assert parse_trace_header(f"{ROOT};Sampled=1") == f"{ROOT};Sampled=1"
    out = for_function(f"{ROOT};Sampled=1")
    assert out is not None and re.fullmatch(ROOT + r";Parent=[0-9a-f]{16};Sampled=1", out)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (ROOT, ROOT + r";Parent=[0-9a-f]{16};Sampled=0"),
        (f"{ROOT};Sampled=?", ROOT + r";Parent=[0-9a-f]{16};Sampled=\?"),
        (f"{ROOT};Lineage=a:1", ROOT + r";Parent=[0-9a-f]{16};Sampled=0;Lineage=a:1"),
        (f"{ROOT};Parent=53995c3f42cd8ad8", ROOT + ";Parent=53995c3f42cd8ad8;Sampled=0"),
        (f"{ROOT};Parent=53995c3f42cd8ad8;Sampled=1", ROOT + ";Parent=53995c3f42cd8ad8;Sampled=1"),
    ],
)
def test_function_gets_a_parent_and_a_decision(header: str, expected: str) -> None:
    out = for_function(header)
    assert out is not None and re.fullmatch(expected, out), out


@pytest.mark.parametrize(
    ("header", "ids"),
    [
        (f"{ROOT};Parent=53995c3f42cd8ad8;Sampled=1", (0x53995C3F42CD8AD8, True)),
        (f"{ROOT};Parent=53995c3f42cd8ad8;Sampled=0", (0x53995C3F42CD8AD8, False)),
        (f"{ROOT};Parent=53995c3f42cd8ad8;Sampled=?", (0x53995C3F42CD8AD8, None)),
        (f"{ROOT};Sampled=1", (None, True)),
        (ROOT, (None, None)),
    ],
)
def test_xray_ids_tell_a_missing_parent_and_an_open_decision(
    header: str, ids: tuple[int | None, bool | None]
) -> None:
    assert xray_ids(header) == (0x5759E988BD862E3FE1BE46A994272793, *ids)


def test_spaces_around_fields_are_dropped() -> None:
    assert parse_trace_header(f" {ROOT} ; Parent=53995c3f42cd8ad8 ;") == (
        f"{ROOT};Parent=53995c3f42cd8ad8"
    )


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Sampled=1",
        "Root=1-5759e988-bd862e3fe1be46a99427279",  # 23 hex digits
        "Root=2-5759e988-bd862e3fe1be46a994272793",
        "Root=1-5759E988-bd862e3fe1be46a994272793",  # upper case
        f"{ROOT};Root=1-5759e988-bd862e3fe1be46a994272794",
        f"{ROOT};Parent=xyz",
        f"{ROOT};Parent=53995c3f42cd8ad8;Parent=53995c3f42cd8ad9",
        f"{ROOT};Sampled",
        f"{ROOT};Evil=<script>",
        f"{ROOT};Evil=a\r\nX-Injected: 1",
        f"{ROOT};k\u00e9y=1",
        f"{ROOT};Pad=" + "a" * (MAX_TRACE_HEADER - len(ROOT)),
    ],
)
def test_malformed_headers_are_dropped_and_replaced(header: str | None) -> None:
    assert parse_trace_header(header) is None
    assert NEW_ROOT.fullmatch(trace_id_for(header, 1_700_000_000))
