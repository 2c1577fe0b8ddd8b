"""Per-route authentication: an HMAC-SHA256 signature of the raw body (GitHub or Stripe style)
or a bearer token. Comparisons are constant-time (`hmac.compare_digest`); secrets and the
presented values are never put in errors or logs.

Result: None = allowed; otherwise an AuthFailure with the HTTP status (401 when the credential
is missing, 403 when it is wrong or stale) and a reason safe to log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from triggerd_webhook.config import BearerAuth, HmacAuth


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


def github_signature(secret: bytes, body: bytes, prefix: str, encoding: str) -> str:
    digest = hmac.new(secret, body, hashlib.sha256).digest()
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return prefix + text


def stripe_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def check_hmac(
    cfg: HmacAuth, get_header: Callable[[str], str | None], body: bytes, now_s: float
) -> AuthFailure | None:
    presented = get_header(cfg.header_name)
    if not presented:
        return _missing("signature header")
    secret = cfg.secret.get_secret_value().encode()
    if cfg.style == "github":
        expected = github_signature(secret, body, cfg.prefix, cfg.encoding)
        if hmac.compare_digest(_bytes(presented.strip()), expected.encode()):
            return None
        return _forbidden("signature mismatch")
    return _check_stripe(cfg, presented, secret, body, now_s)


def _check_stripe(
    cfg: HmacAuth, presented: str, secret: bytes, body: bytes, now_s: float
) -> AuthFailure | None:
    timestamp = ""
    candidates: list[str] = []
    for item in presented.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if not timestamp.isdigit() or not candidates:
        return _forbidden("malformed signature header")
    if abs(now_s - int(timestamp)) > cfg.tolerance_s:
        return _forbidden("signature timestamp outside the tolerance")
    expected = stripe_signature(secret, timestamp, body).encode()
    # Compare against every v1 entry (secret rotation), without stopping at the first match.
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(_bytes(candidate), expected)
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
    if cfg is None:
        return None
    if isinstance(cfg, HmacAuth):
        return check_hmac(cfg, get_header, body, now_s)
    return check_bearer(cfg, get_header)
