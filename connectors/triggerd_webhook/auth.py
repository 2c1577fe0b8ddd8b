"""Per-route authentication: an HMAC-SHA256 signature of the raw body (GitHub or Stripe style)
or a bearer token. Comparisons are constant-time (`hmac.compare_digest`); secrets and the
presented values are never put in errors or logs.

Result: None = allowed; otherwise an AuthFailure with the HTTP status (401 when the credential
is missing, 403 when it is wrong, malformed or stale) and a reason safe to log.

`check_headers` decides what the headers can before the body is read (a bearer token
entirely; an HMAC header's presence, shape and timestamp), `check_body` verifies the MAC once
the body is in. Nothing presented by a client reaches `int()` or a comparison unchecked: a
malformed header is a 403, never an exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from triggerd_webhook.config import BearerAuth, HmacAuth

#: A SHA-256 digest, hex (GitHub, Stripe) or base64 (Shopify and others).
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_BASE64_DIGEST = re.compile(r"[A-Za-z0-9+/]{43}=")
#: A Stripe-style `t`: ASCII digits only, at most 12 (seconds until the year 33658).
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class AuthFailure:
    status: int
    reason: str


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _missing(what: str) -> AuthFailure:
    return AuthFailure(401, f"{what} missing")


def _forbidden(reason: str) -> AuthFailure:
    return AuthFailure(403, reason)


def _malformed() -> AuthFailure:
    return _forbidden("malformed signature header")


def github_signature(secret: bytes, body: bytes, prefix: str, encoding: str) -> str:
    digest = hmac.new(secret, body, hashlib.sha256).digest()
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return prefix + text


def stripe_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _github_digest(cfg: HmacAuth, presented: str) -> str | None:
    """The digest part of a GitHub-style header, if it has the configured prefix and the
    shape of a SHA-256 digest in the configured encoding."""
    value = presented.strip()
    if not value.startswith(cfg.prefix):
        return None
    digest = value[len(cfg.prefix) :]
    shape = _HEX_DIGEST if cfg.encoding == "hex" else _BASE64_DIGEST
    return digest if shape.fullmatch(digest) else None


def _stripe_parts(presented: str) -> tuple[str, list[str]] | None:
    """(timestamp, v1 signatures) of a Stripe-style header; None when malformed: `t` must be
    ASCII digits of a plausible length (`int()` would take `²` or fail on 5,000 digits), and
    at least one v1 entry must look like a hex SHA-256 (other schemes' entries are ignored)."""
    timestamp = ""
    candidates: list[str] = []
    for item in presented.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1" and _HEX_DIGEST.fullmatch(value):
            candidates.append(value)
    if not (_TIMESTAMP.fullmatch(timestamp) and candidates):
        return None
    return timestamp, candidates


def check_headers(
    cfg: HmacAuth | BearerAuth | None, get_header: Callable[[str], str | None], now_s: float
) -> AuthFailure | None:
    """Everything the headers alone can decide, before the body is read: a bearer token
    completely; for HMAC the header's presence and shape, and a Stripe-style timestamp's
    tolerance. `check_body` then verifies the MAC."""
    if cfg is None:
        return None
    if isinstance(cfg, BearerAuth):
        return check_bearer(cfg, get_header)
    presented = get_header(cfg.header_name)
    if not presented:
        return _missing("signature header")
    if cfg.style == "github":
        return None if _github_digest(cfg, presented) is not None else _malformed()
    parts = _stripe_parts(presented)
    if parts is None:
        return _malformed()
    if abs(now_s - int(parts[0])) > cfg.tolerance_s:
        return _forbidden("signature timestamp outside the tolerance")
    return None


def check_body(
    cfg: HmacAuth | BearerAuth | None, get_header: Callable[[str], str | None], body: bytes
) -> AuthFailure | None:
    """The HMAC of the body, for a request whose headers passed `check_headers`."""
    if not isinstance(cfg, HmacAuth):
        return None
    presented = get_header(cfg.header_name) or ""
    secret = cfg.secret.get_secret_value().encode()
    if cfg.style == "github":
        digest = _github_digest(cfg, presented)
        if digest is None:
            return _malformed()
        expected = github_signature(secret, body, "", cfg.encoding)
        if hmac.compare_digest(digest.encode(), expected.encode()):
            return None
        return _forbidden("signature mismatch")
    parts = _stripe_parts(presented)
    if parts is None:
        return _malformed()
    timestamp, candidates = parts
    expected_mac = stripe_signature(secret, timestamp, body).encode()
    # Compare against every v1 entry (secret rotation), without stopping at the first match.
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(candidate.encode(), expected_mac)
    return None if ok else _forbidden("signature mismatch")


def check_bearer(cfg: BearerAuth, get_header: Callable[[str], str | None]) -> AuthFailure | None:
    presented = get_header("Authorization")
    if not presented:
        return _missing("Authorization header")
    scheme, _, token = presented.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _missing("bearer token")
    expected = cfg.token.get_secret_value().encode()
    if hmac.compare_digest(_bytes(token.strip()), expected):
        return None
    return _forbidden("token mismatch")


def check(
    cfg: HmacAuth | BearerAuth | None,
    get_header: Callable[[str], str | None],
    body: bytes,
    now_s: float,
) -> AuthFailure | None:
    """`check_headers`, then `check_body`: the whole check of a request already read."""
    return check_headers(cfg, get_header, now_s) or check_body(cfg, get_header, body)
