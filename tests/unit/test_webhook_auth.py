"""Webhook auth: HMAC (GitHub / Stripe style) and bearer tokens, constant-time compares."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest

from triggerd_webhook import auth
from triggerd_webhook.config import BearerAuth, HmacAuth

BODY = b'{"event":"push"}'
SECRET = "s3cret"


def headers(**values: str) -> Any:
    lowered = {k.lower().replace("_", "-"): v for k, v in values.items()}
    return lambda name: lowered.get(name.lower())


def github(style: str = "github", **kw: Any) -> HmacAuth:
    return HmacAuth(type="hmac", secret=SECRET, style=style, **kw)  # type: ignore[arg-type]


def sig(body: bytes = BODY, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_github_signature_accepted_and_wrong_ones_forbidden() -> None:
    cfg = github()
    assert auth.check(cfg, headers(x_hub_signature_256=sig()), BODY, 0) is None
    bad = auth.check(cfg, headers(x_hub_signature_256=sig(secret="x")), BODY, 0)
    assert bad is not None and bad.status == 403
    tampered = auth.check(cfg, headers(x_hub_signature_256=sig()), BODY + b" ", 0)
    assert tampered is not None and tampered.status == 403


def test_missing_signature_is_401() -> None:
    failure = auth.check(github(), headers(), BODY, 0)
    assert failure is not None and failure.status == 401


def test_custom_header_prefix_and_base64_encoding() -> None:
    cfg = github(header="X-Shopify-Hmac-Sha256", prefix="", encoding="base64")
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()
    value = base64.b64encode(digest).decode()
    assert auth.check(cfg, headers(x_shopify_hmac_sha256=value), BODY, 0) is None


def stripe_header(ts: int, secret: str = SECRET, extra: str = "") -> str:
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + BODY, hashlib.sha256).hexdigest()
    return f"t={ts},{extra}v1={mac}"


def test_stripe_signature_within_tolerance_accepted() -> None:
    cfg = github(style="stripe")
    now = 1_700_000_000
    assert auth.check(cfg, headers(stripe_signature=stripe_header(now - 10)), BODY, now) is None


def test_stripe_rotated_secrets_any_v1_entry_matches() -> None:
    cfg = github(style="stripe")
    now = 1_700_000_000
    value = stripe_header(now, extra="v1=00ff,")
    assert auth.check(cfg, headers(stripe_signature=value), BODY, now) is None


@pytest.mark.parametrize(
    "value",
    [
        stripe_header(1_700_000_000 - 301),
        stripe_header(1_700_000_000, secret="other"),
        "t=abc,v1=00",
        "v1=00",
        "garbage",
    ],
)
def test_stripe_stale_wrong_or_malformed_is_403(value: str) -> None:
    failure = auth.check(github(style="stripe"), headers(stripe_signature=value), BODY, 1.7e9)
    assert failure is not None and failure.status == 403


def test_bearer_token() -> None:
    cfg = BearerAuth(type="bearer", token="tok-1")  # type: ignore[arg-type]
    assert auth.check(cfg, headers(authorization="Bearer tok-1"), b"", 0) is None
    assert auth.check(cfg, headers(authorization="bearer tok-1"), b"", 0) is None
    for value, status in (("Bearer tok-2", 403), ("Basic dG9r", 401), ("Bearer ", 401)):
        failure = auth.check(cfg, headers(authorization=value), b"", 0)
        assert failure is not None and failure.status == status, value
    failure = auth.check(cfg, headers(), b"", 0)
    assert failure is not None and failure.status == 401


def test_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    auth.check(github(), headers(x_hub_signature_256="sha256=" + "00" * 32), BODY, 0)
    cfg = BearerAuth(type="bearer", token="tok-1")  # type: ignore[arg-type]
    auth.check(cfg, headers(authorization="Bearer nope"), b"", 0)
    auth.check(github(style="stripe"), headers(stripe_signature=stripe_header(5)), BODY, 5)
    assert len(calls) == 3


def test_failure_reasons_never_contain_secrets_or_presented_values() -> None:
    presented = "sha256=deadbeef-presented"
    failure = auth.check(github(), headers(x_hub_signature_256=presented), BODY, 0)
    assert failure is not None
    assert SECRET not in failure.reason and "deadbeef" not in failure.reason


@pytest.mark.parametrize(
    "value",
    [
        "t=²,v1=" + "0" * 64,  # str.isdigit() is true, int() fails
        "t=" + "9" * 5000 + ",v1=" + "0" * 64,  # int() refuses more than 4300 digits
        "t=\u0661\u0667\u0660\u0660,v1=" + "0" * 64,  # digits int() takes, but not ASCII
        "t=\udcff,v1=" + "0" * 64,  # a non-UTF-8 byte as aiohttp decodes it
        "t=1700000000,v1=\udcff",
        "t=1700000000,v1=" + "g" * 64,
        "t=1700000000",
        "t=1=2,v1",
    ],
)
def test_a_malformed_stripe_header_is_403_on_the_headers_alone(value: str) -> None:
    cfg = github(style="stripe")
    failure = auth.check_headers(cfg, headers(stripe_signature=value), 1_700_000_000)
    assert failure == auth.AuthFailure(403, "malformed signature header")
    assert auth.check(cfg, headers(stripe_signature=value), BODY, 1_700_000_000) == failure


@pytest.mark.parametrize(
    "value", ["sha256=zz", "sha256=", "sha256=" + "é" * 64, "md5=" + "0" * 64, "\udcff"]
)
def test_a_malformed_github_header_is_403_on_the_headers_alone(value: str) -> None:
    failure = auth.check_headers(github(), headers(x_hub_signature_256=value), 0)
    assert failure == auth.AuthFailure(403, "malformed signature header")


def test_headers_decide_bearer_and_hmac_shape_and_the_body_decides_the_mac() -> None:
    bearer = BearerAuth(type="bearer", token="tok-1")  # type: ignore[arg-type]
    assert auth.check_headers(bearer, headers(authorization="Bearer tok-1"), 0) is None
    assert auth.check_headers(bearer, headers(authorization="Bearer no"), 0) is not None
    well_formed = headers(x_hub_signature_256=sig(secret="other"))
    assert auth.check_headers(github(), well_formed, 0) is None  # passes: the MAC decides
    failure = auth.check_body(github(), well_formed, BODY)
    assert failure == auth.AuthFailure(403, "signature mismatch")
    assert auth.check_body(github(), headers(x_hub_signature_256=sig()), BODY) is None


def test_a_stale_stripe_timestamp_is_refused_on_the_headers_alone() -> None:
    stale = headers(stripe_signature=stripe_header(1_700_000_000 - 301))
    failure = auth.check_headers(github(style="stripe"), stale, 1_700_000_000)
    assert failure is not None and failure.status == 403
