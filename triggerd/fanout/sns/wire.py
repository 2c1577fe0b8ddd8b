"""The Query protocol's wire format: form parameters in (`Attributes.entry.N.key`,
`PublishBatchRequestEntries.member.N.Id`, ...), XML out, and AWS's error documents.

XML is built with the standard library's ElementTree (escaping included): the responses are
small and their shape is fixed by botocore's `sns` service model."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree as ET

__all__ = [
    "NAMESPACE",
    "SnsError",
    "entries",
    "error_document",
    "members",
    "parse_form",
    "response_document",
]

NAMESPACE = "http://sns.amazonaws.com/doc/2010-03-31/"
#: More form fields than any request of the served actions needs (10 batch entries with 10
#: attributes of 3 fields each, and their own fields): a body with more is refused.
MAX_FIELDS = 1000
_INDEX = re.compile(r"^[1-9][0-9]{0,3}$")


class SnsError(Exception):
    """An error answer: AWS's code (botocore maps it to the client's exception), HTTP status,
    and who is at fault (`Sender` or `Receiver`)."""

    def __init__(self, code: str, message: str, status: int = 400, *, sender: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.sender = sender


def invalid(message: str) -> SnsError:
    return SnsError("InvalidParameter", message)


def not_found(message: str) -> SnsError:
    return SnsError("NotFound", message, 404)


def parse_form(body: bytes) -> dict[str, str]:
    """The form's fields (a field given twice keeps its first value); InvalidParameter for
    a body that is not a form, has too many fields or is not UTF-8."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS
        )
    except UnicodeDecodeError:
        raise invalid("The request body is not UTF-8") from None
    except ValueError as exc:
        raise invalid(f"The request body is not a form: {str(exc)[:100]}") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def _indexed(form: Mapping[str, str], prefix: str) -> dict[int, dict[str, str]]:
    """`prefix.N.rest=value` fields grouped by N (1-based, as the Query protocol numbers)."""
    found: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        if not key.startswith(prefix):
            continue
        index, dot, rest = key[len(prefix) :].partition(".")
        if not dot or not _INDEX.match(index):
            raise invalid(f"Invalid parameter: {key[:100]}")
        found.setdefault(int(index), {})[rest] = value
    return found


def members(form: Mapping[str, str], name: str) -> list[dict[str, str]]:
    """A list parameter (`Name.member.N.*`), in order; a gap in the numbering is an error."""
    found = _indexed(form, f"{name}.member.")
    if sorted(found) != list(range(1, len(found) + 1)):
        raise invalid(f"Invalid parameter: {name}: members must be numbered 1, 2, 3...")
    return [found[i] for i in range(1, len(found) + 1)]


def entries(form: Mapping[str, str], name: str, key: str = "key") -> dict[str, dict[str, str]]:
    """A map parameter (`Name.entry.N.key` / `Name.entry.N.value[.*]`) by its keys; each
    entry's other fields with the `value.` prefix removed (`Value.` for message attributes)."""
    out: dict[str, dict[str, str]] = {}
    for fields in _indexed(form, f"{name}.entry.").values():
        k = fields.get(key)
        if k is None:
            raise invalid(f"Invalid parameter: {name}: an entry has no {key}")
        if k in out:
            raise invalid(f"Invalid parameter: {name}: {k[:100]!r} is given twice")
        out[k] = {f: v for f, v in fields.items() if f != key}
    return out


def _append(parent: ET.Element, name: str, value: Any) -> None:
    """`value` under `parent` as botocore's Query parser reads it: dicts are structures, lists
    of dicts `member` lists, `("entries", {...})` maps of key/value entries."""
    node = ET.SubElement(parent, name)
    if isinstance(value, dict):
        for k, v in value.items():
            if v is not None:
                _append(node, k, v)
    elif isinstance(value, list):
        for item in value:
            _append(node, "member", item)
    elif isinstance(value, tuple) and value and value[0] == "entries":
        for k, v in value[1].items():
            entry = ET.SubElement(node, "entry")
            ET.SubElement(entry, "key").text = k
            ET.SubElement(entry, "value").text = v
    elif isinstance(value, bool):
        node.text = "true" if value else "false"
    else:
        node.text = str(value)


def response_document(action: str, result: Mapping[str, Any] | None, request_id: str) -> bytes:
    """`<ActionResponse><ActionResult>...</ActionResult><ResponseMetadata>...`"""
    root = ET.Element(f"{action}Response", xmlns=NAMESPACE)
    if result is not None:
        res = ET.SubElement(root, f"{action}Result")
        for k, v in result.items():
            if v is not None:
                _append(res, k, v)
    meta = ET.SubElement(root, "ResponseMetadata")
    ET.SubElement(meta, "RequestId").text = request_id
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))


def error_document(error: SnsError, request_id: str) -> bytes:
    root = ET.Element("ErrorResponse", xmlns=NAMESPACE)
    err = ET.SubElement(root, "Error")
    ET.SubElement(err, "Type").text = "Sender" if error.sender else "Receiver"
    ET.SubElement(err, "Code").text = error.code
    ET.SubElement(err, "Message").text = error.message
    ET.SubElement(root, "RequestId").text = request_id
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))
