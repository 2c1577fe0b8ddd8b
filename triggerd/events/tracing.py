"""X-Ray trace headers: the `X-Amzn-Trace-Id` an invocation carries to its function.

An incoming header (a webhook's or Invoke API request's `X-Amzn-Trace-Id`, an SQS message's
`AWSTraceHeader`) is kept when it is well formed; anything else (too long, no valid `Root`,
odd characters: a hostile or broken client) is dropped and a fresh id is made, as Lambda
starts a new trace when none comes in. Written by hand: the format is a few lines, and the
X-Ray SDK is a tracing client, not a parser the daemon should depend on.
"""

from __future__ import annotations

import os
import random
import re

#: Longer headers are dropped (X-Ray's own limit for the whole header is 256 characters).
MAX_TRACE_HEADER = 256

_ROOT = re.compile(r"1-[0-9a-f]{8}-[0-9a-f]{24}")
_PARENT = re.compile(r"[0-9a-f]{16}")
#: Keys and values of the other fields (`Sampled`, `Lineage`, `Self`, vendor data).
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_VALUE = re.compile(r"[A-Za-z0-9_.:@/+=|-]{0,128}")

#: Ids need only be unique, not secret: one generator seeded by the OS, no system call per id.
_ids = random.Random(os.urandom(32))


def new_trace_id(epoch_s: float, rng: random.Random | None = None) -> str:
    """A fresh trace header in X-Ray format, not sampled (the daemon records no segments)."""
    rand = f"{(rng or _ids).getrandbits(160):040x}"
    return f"Root=1-{int(epoch_s) & 0xFFFFFFFF:08x}-{rand[:24]};Parent={rand[24:40]};Sampled=0"


def parse_trace_header(value: str | None) -> str | None:
    """The header normalised (`Root=...;Parent=...;...`), or None when absent or malformed.

    A header without `Parent` (a trace's first hop) gets one, as the function's segment
    needs a parent id; the other fields are kept in their order."""
    if not value or len(value) > MAX_TRACE_HEADER:
        return None
    root: str | None = None
    parent: str | None = None
    rest: list[str] = []
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or _KEY.fullmatch(key) is None:
            return None
        if key == "Root":
            if root is not None or _ROOT.fullmatch(val) is None:
                return None
            root = val
        elif key == "Parent":
            if parent is not None or _PARENT.fullmatch(val) is None:
                return None
            parent = val
        elif _VALUE.fullmatch(val) is None:
            return None
        else:
            rest.append(f"{key}={val}")
    if root is None:
        return None
    if parent is None:
        parent = f"{_ids.getrandbits(64):016x}"
    return ";".join([f"Root={root}", f"Parent={parent}", *rest])


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def from_traceparent(value: str | None) -> str | None:
    """A W3C `traceparent` as an X-Ray header (the trace id split after its first 8 digits,
    as AWS's own propagators do), or None when absent or malformed. Versions after 00 may
    append fields: only the first four are read, as the W3C spec asks."""
    if not value or len(value) > MAX_TRACE_HEADER:
        return None
    found = _TRACEPARENT.match(value.strip())
    if found is None:
        return None
    version, trace_id, span_id, flags = found.groups()
    if version == "ff" or (version == "00" and len(value.strip()) != 55):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    sampled = int(flags, 16) & 1
    return f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={span_id};Sampled={sampled}"


def xray_ids(header: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a normalised X-Ray header, as W3C/OpenTelemetry
    numbers; None when the header has none."""
    parsed = parse_trace_header(header)
    if parsed is None:
        return None
    fields = dict(part.partition("=")[::2] for part in parsed.split(";"))
    root = fields["Root"]
    return int(root[2:10] + root[11:], 16), int(fields["Parent"], 16), fields.get("Sampled") == "1"


def trace_id_for(value: str | None, epoch_s: float, traceparent: str | None = None) -> str:
    """The incoming X-Ray header when well formed, else the incoming W3C `traceparent`
    (OpenTelemetry clients send only that), else a fresh id."""
    return parse_trace_header(value) or from_traceparent(traceparent) or new_trace_id(epoch_s)
