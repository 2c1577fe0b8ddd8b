"""S3 event notification records (`aws:s3`), key encoding and sequencers.

Independent of where the objects live: the `directory` source (files on this machine) and the
`s3` source (a bucket) both emit these records, so the shape lives in the core. Standard library
and `triggerd.events.timestamps` only.
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from triggerd.events.timestamps import iso_ms

JSONDict = dict[str, Any]

#: Bytes S3 leaves literal in `s3.object.key`: what Java's `URLEncoder` leaves literal
#: (ASCII letters and digits, `-`, `_`, `.`, `*`) plus `/`, which S3 keeps so the key still
#: reads as a path. Everything else is UTF-8 encoded and written `%XX` (upper-case hex), except
#: the space, written `+`. In particular `~` becomes `%7E` (URLEncoder style, unlike RFC 3986),
#: and `+` becomes `%2B`, so `urllib.parse.unquote_plus` gives the original key back.
KEY_LITERAL_BYTES = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.*/"
)

#: Width of the hex sequencers we issue (S3's own are 18 digits; consumers pad before comparing).
SEQUENCER_WIDTH = 16
_SEQUENCER_FORMAT = f"0{SEQUENCER_WIDTH}X"

#: `iso_ms` for `eventTime`: records made together (a directory source's files settled in
#: one pass) share their time, and formatting it was a twelfth of such a record's cost.
_event_time = functools.lru_cache(maxsize=16)(iso_ms)

_ENCODE_TABLE = tuple(
    chr(b) if b in KEY_LITERAL_BYTES else ("+" if b == 0x20 else f"%{b:02X}") for b in range(256)
)


#: A key made only of literal characters is written as it is.
_LITERAL_KEY = re.compile(r"[A-Za-z0-9\-_.*/]*\Z")


def encode_s3_key(key: str) -> str:
    """Encode an object key the way S3 writes it into event notifications.

    >>> encode_s3_key("uploads/red flower+1.jpg")
    'uploads/red+flower%2B1.jpg'
    """
    if _LITERAL_KEY.match(key):
        return key  # the common case, without a table look-up per byte
    return "".join(_ENCODE_TABLE[b] for b in key.encode("utf-8", "surrogateescape"))


def new_request_id() -> str:
    """A random `x-amz-request-id`: 16 upper-case hex digits."""
    return secrets.token_hex(8).upper()


def new_host_id() -> str:
    """A random `x-amz-id-2`: 64 base64 characters."""
    return base64.b64encode(secrets.token_bytes(48)).decode("ascii")


def s3_event_record(
    *,
    event_name: str,
    bucket: str,
    key: str,
    size: int | None = None,
    etag: str | None = None,
    sequencer: str,
    event_time: float,
    region: str,
    configuration_id: str,
    version_id: str | None = None,
    principal_id: str = "triggerd",
    owner_id: str | None = None,
    source_ip: str = "127.0.0.1",
    request_id: str,
    host_id: str,
    event_version: str = "2.1",
) -> JSONDict:
    """One element of an S3 notification's `Records`.

    `key` is the raw object key (it is encoded here). `size` and `eTag` are left out of
    `ObjectRemoved:*` records whatever is passed; `versionId` appears only when given.
    `owner_id` (the bucket owner's principal) defaults to `principal_id`.
    """
    obj: JSONDict = {"key": encode_s3_key(key)}
    if not event_name.startswith("ObjectRemoved:"):
        if size is not None:
            obj["size"] = size
        if etag is not None:
            obj["eTag"] = etag
    if version_id is not None:
        obj["versionId"] = version_id
    obj["sequencer"] = sequencer.upper()
    return {
        "eventVersion": event_version,
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": _event_time(event_time),
        "eventName": event_name,
        "userIdentity": {"principalId": principal_id},
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {"x-amz-request-id": request_id, "x-amz-id-2": host_id},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": owner_id or principal_id},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


class Sequencer:
    """Issues strictly increasing upper-case hex sequencers of a fixed width.

    The value is the wall-clock time in microseconds, or the previous value plus one when the
    clock has not moved on (or went backwards). Seed it with the last value issued before a
    restart (`last`) and it stays increasing across restarts even if the clock was stepped back.
    """

    def __init__(self, time_fn: Callable[[], float] = time.time, last: str | None = None) -> None:
        self._time = time_fn
        self._last = int(last, 16) if last else 0

    @property
    def last(self) -> str | None:
        return self.format(self._last) if self._last else None

    def next(self) -> str:
        now_us = int(self._time() * 1_000_000)
        self._last = max(self._last + 1, now_us)
        return self.format(self._last)

    @staticmethod
    def format(value: int) -> str:
        return format(value, _SEQUENCER_FORMAT)  # a nested f-string spec is parsed per call


_SAMPLE_EVENTS = {
    "created": "ObjectCreated:Put",
    "put": "ObjectCreated:Put",
    "modified": "ObjectCreated:Put",
    "deleted": "ObjectRemoved:Delete",
    "delete": "ObjectRemoved:Delete",
}
#: generate-event's options for the S3-shaped sources (s3, directory): name -> help.
S3_SAMPLE_OPTIONS: dict[str, str] = {
    "event": "created (default), modified, deleted, or an S3 event name (ObjectRemoved:Delete)",
    "bucket": "bucket name (default example-bucket)",
    "key": 'object key (default "uploads/example file.txt")',
    "size": "object size in bytes (default 1024)",
    "etag": "object ETag (default the empty object's)",
    "region": "awsRegion (default us-east-1)",
    "configuration_id": "s3.configurationId (default triggerd)",
}
_SAMPLE_OPTIONS = tuple(S3_SAMPLE_OPTIONS)
_EVENT_NAME_RE = re.compile(
    r"^(ObjectCreated|ObjectRemoved|ObjectRestore|ObjectTagging|"
    r"ObjectAcl|LifecycleExpiration|LifecycleTransition):[A-Za-z]+$"
)
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def is_valid_bucket_name(name: str) -> bool:
    """3-63 characters of lower-case letters, digits, `.` and `-`, starting and ending with a
    letter or digit, no `..`, not shaped like an IPv4 address."""
    return bool(_BUCKET_RE.match(name)) and ".." not in name and not _IPV4_RE.match(name)


def sample_s3_event(options: Mapping[str, str]) -> JSONDict:
    """A sample notification for `generate-event`.

    Options: `bucket`, `key` (raw, encoded here), `event` (`created`, `modified`, `deleted`
    or a full event name such as `ObjectRemoved:Delete`), `region`, `size`, `etag`,
    `configuration_id`. Raises ValueError for an unknown option or a bad value.
    """
    unknown = sorted(set(options) - set(_SAMPLE_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(_SAMPLE_OPTIONS)}"
        )
    event = options.get("event", "created")
    event_name = _SAMPLE_EVENTS.get(event.lower(), event)
    if not _EVENT_NAME_RE.match(event_name):
        raise ValueError(
            f"event {event!r}: use created, modified, deleted or an S3 event name such as "
            "ObjectRemoved:Delete"
        )
    bucket = options.get("bucket", "example-bucket")
    if not is_valid_bucket_name(bucket):
        raise ValueError(f"bucket {bucket!r} is not a valid S3 bucket name")
    size = options.get("size", "1024")
    if not size.isdigit():
        raise ValueError(f"size {size!r} is not a non-negative integer")
    record = s3_event_record(
        event_name=event_name,
        bucket=bucket,
        key=options.get("key", "uploads/example file.txt"),
        size=int(size),
        etag=options.get("etag", "d41d8cd98f00b204e9800998ecf8427e"),
        sequencer="0055AED6DCD90281E5",
        event_time=time.time(),
        region=options.get("region", "us-east-1"),
        configuration_id=options.get("configuration_id", "triggerd"),
        request_id=new_request_id(),
        host_id=new_host_id(),
    )
    return {"Records": [record]}
