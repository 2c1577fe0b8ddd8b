"""AWS Signature Version 4 verification: the canonical request, string to sign and signature
against vectors of AWS's published SigV4 test suite (rebuilt here from its documented requests:
AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1, service `service`), botocore's signer as an
independent reference, and each refusal with AWS's error code and message."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from triggerd.config.access import AccessKey
from triggerd.http.sigv4 import (
    AuthError,
    SignedRequest,
    SigV4Verifier,
    canonical_query,
    canonical_request,
    canonical_uri,
    signing_key,
    string_to_sign,
)

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20150830T123600Z"
SIGNED_AT = datetime(2015, 8, 30, 12, 36, tzinfo=UTC).timestamp()
SCOPE = "20150830/us-east-1/service/aws4_request"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: The test suite's get-vanilla request: its canonical request, string to sign and signature.
VANILLA_CANONICAL = (
    "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
    "host;x-amz-date\n" + EMPTY_SHA256
)
VANILLA_STRING_TO_SIGN = (
    "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
    "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
)
VANILLA_SIGNATURE = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"


@contextlib.contextmanager
def botocore_clock(when: datetime) -> Iterator[None]:
    """botocore's signer at a fixed instant: botocore >= 1.35 asks
    `botocore.auth.get_current_datetime`, older releases (the aiobotocore floor's)
    `datetime.datetime.utcnow` through the module `botocore.auth` imported."""
    import botocore.auth

    if hasattr(botocore.auth, "get_current_datetime"):
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            yield
        return
    clock = mock.MagicMock(wraps=botocore.auth.datetime)
    clock.datetime.utcnow.return_value = when
    with mock.patch("botocore.auth.datetime", clock):
        yield


def key(**extra: Any) -> AccessKey:
    fields: dict[str, Any] = {
        "access_key_id": KEY_ID,
        "secret_access_key": SecretStr(SECRET),
        "actions": ["lambda:InvokeFunction"],
        **extra,
    }
    return AccessKey(**fields)


def verifier(now: float = SIGNED_AT, **extra: Any) -> SigV4Verifier:
    return SigV4Verifier(
        [key(**extra)],
        region="us-east-1",
        service="service",
        account_id="123456789012",
        now=lambda: now,
    )


def request(
    path: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    *,
    signature: str = VANILLA_SIGNATURE,
    signed: str = "host;x-amz-date",
    method: str = "GET",
    credential: str = f"{KEY_ID}/{SCOPE}",
) -> SignedRequest:
    base = [("Host", "example.amazonaws.com"), ("X-Amz-Date", AMZ_DATE)]
    auth = (
        f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed}, Signature={signature}"
    )
    return SignedRequest(method, path, query, [*base, *(headers or []), ("Authorization", auth)])


# ---- AWS's test-suite vectors --------------------------------------------------------------


def test_get_vanilla_canonical_request_string_to_sign_and_signature() -> None:
    req = request()
    canonical = canonical_request(req, ["host", "x-amz-date"], EMPTY_SHA256)
    assert canonical == VANILLA_CANONICAL
    assert string_to_sign(AMZ_DATE, SCOPE, canonical) == VANILLA_STRING_TO_SIGN
    assert verifier().verify(req, b"").access_key_id == KEY_ID


def test_the_signing_key_of_the_general_reference_example() -> None:
    # The AWS General Reference's worked example: 2012-02-15, us-east-1, iam.
    derived = signing_key(SECRET, "20120215", "us-east-1", "iam")
    assert derived.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/example/..", "/"),  # get-relative
        ("/example1/example2/../..", "/"),  # get-relative-relative
        ("//", "/"),  # get-slash
        ("/./", "/"),  # get-slash-dot-slash
        ("/example/.", "/example"),  # get-slash-pointless-dot
        ("//example//", "/example/"),  # get-slashes
    ],
)
def test_normalize_path_vectors(path: str, canonical: str) -> None:
    assert canonical_uri(path) == canonical
    if canonical == "/":  # the same canonical request as get-vanilla, hence its signature
        assert verifier().verify(request(path), b"").access_key_id == KEY_ID


def test_query_parameters_are_sorted_by_name_then_value() -> None:
    # get-vanilla-query-order-key-case, get-vanilla-query-order-value
    assert canonical_query("Param2=value2&Param1=value1") == "Param1=value1&Param2=value2"
    assert canonical_query("Param1=value2&Param1=Value1") == "Param1=Value1&Param1=value2"
    # get-vanilla-query-unreserved: unreserved characters stay as they are
    unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    assert canonical_query(f"{unreserved}={unreserved}") == f"{unreserved}={unreserved}"
    # anything else percent-encoded once, however the client sent it
    assert canonical_query("a=b c&k=%2F") == "a=b%20c&k=%2F"


def test_header_values_are_trimmed_and_inner_spaces_collapsed() -> None:
    # get-header-value-trim
    req = request(headers=[("My-Header1", " value1"), ("My-Header2", ' "a   b   c"')])
    canonical = canonical_request(req, ["host", "my-header1", "my-header2"], EMPTY_SHA256)
    assert 'my-header1:value1\nmy-header2:"a b c"\n' in canonical


def test_repeated_headers_are_joined_with_commas() -> None:
    # get-header-key-duplicate: one canonical line, values in the order they came
    req = request(headers=[("My-Header1", "value2"), ("My-Header1", "value1")])
    assert "my-header1:value2,value1\n" in canonical_request(
        req, ["host", "my-header1"], EMPTY_SHA256
    )


# ---- against botocore's signer -------------------------------------------------------------


def botocore_signed(
    method: str, url: str, body: bytes, headers: dict[str, str], service: str = "service"
) -> SignedRequest:
    """A request signed by botocore at the test suite's instant, as a server receives it."""
    aws = AWSRequest(method=method, url=url, data=body, headers=headers)
    when = datetime(2015, 8, 30, 12, 36)
    with botocore_clock(when):
        SigV4Auth(Credentials(KEY_ID, SECRET), service, "us-east-1").add_auth(aws)
    prepared = aws.prepare()
    host = url.split("/")[2]
    raw = prepared.url.split(host, 1)[1]
    path, _, query = raw.partition("?")
    pairs = [("Host", host), *((k, str(v)) for k, v in prepared.headers.items())]
    return SignedRequest(method, path, query, pairs)


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "https://example.amazonaws.com/", b""),
        ("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", b""),
        ("POST", "https://example.amazonaws.com/", b"Param1=value1"),
        (
            "POST",
            "https://lambda.example/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A"
            "123456789012%3Afunction%3Afn/invocations",
            b'{"a": 1}',
        ),
        (
            "POST",
            "https://lambda.example/2015-03-31/functions/f/invocations?Qualifier=%24LATEST",
            b"{}",
        ),
    ],
)
def test_requests_signed_by_botocore_verify(method: str, url: str, body: bytes) -> None:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Amz-Invocation-Type": "Event",
    }
    signed = botocore_signed(method, url, body, headers)
    assert verifier().verify(signed, body).arn == "arn:aws:iam::123456789012:user/AKIDEXAMPLE"
    with pytest.raises(AuthError) as info:
        verifier().verify(signed, body + b" ")
    assert info.value.code == "InvalidSignatureException"


# ---- refusals ------------------------------------------------------------------------------


def refusal(req: SignedRequest, v: SigV4Verifier | None = None) -> AuthError:
    with pytest.raises(AuthError) as info:
        (v or verifier()).verify(req, b"")
    assert info.value.status == 403
    return info.value


def test_no_authorization_header_is_a_missing_token() -> None:
    req = SignedRequest("GET", "/", "", [("Host", "example.amazonaws.com")])
    err = refusal(req)
    assert (err.code, err.message) == (
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    )


def test_an_unknown_key_is_an_unrecognized_client() -> None:
    err = refusal(request(credential=f"AKIDOTHERKEY0000/{SCOPE}"))
    assert err.code == "UnrecognizedClientException"
    assert err.message == "The security token included in the request is invalid."


def test_a_wrong_secret_is_an_invalid_signature() -> None:
    v = SigV4Verifier(
        [key(secret_access_key=SecretStr("not-the-secret-at-all"))],
        region="us-east-1",
        service="service",
        account_id="123456789012",
        now=lambda: SIGNED_AT,
    )
    err = refusal(request(), v)
    assert err.code == "InvalidSignatureException"
    assert err.message.startswith("The request signature we calculated does not match")
    assert "not-the-secret" not in err.message


def test_a_date_older_than_15_minutes_has_expired() -> None:
    err = refusal(request(), verifier(now=SIGNED_AT + 15 * 60 + 1))
    assert err.code == "InvalidSignatureException"
    assert err.message == (
        "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z "
        "(20150830T125101Z - 15 min.)"
    )
    assert verifier(now=SIGNED_AT + 15 * 60).verify(request(), b"")  # the edge still passes


def test_a_date_more_than_15_minutes_ahead_is_not_yet_current() -> None:
    err = refusal(request(), verifier(now=SIGNED_AT - 15 * 60 - 1))
    assert err.code == "InvalidSignatureException"
    assert err.message.startswith("Signature not yet current: 20150830T123600Z is still later")


@pytest.mark.parametrize(
    ("credential", "words"),
    [
        (f"{KEY_ID}/20150831/us-east-1/service/aws4_request", "Date in Credential scope"),
        (f"{KEY_ID}/20150830/eu-west-1/service/aws4_request", "valid region"),
        (f"{KEY_ID}/20150830/us-east-1/sns/aws4_request", "correct service: 'service'"),
        (f"{KEY_ID}/20150830/us-east-1/service/aws5_request", "valid terminator"),
    ],
)
def test_a_scope_for_another_date_region_or_service_is_refused(credential: str, words: str) -> None:
    err = refusal(request(credential=credential))
    assert err.code == "InvalidSignatureException" and words in err.message


@pytest.mark.parametrize(
    ("authorization", "words"),
    [
        ("AWS4-HMAC-SHA1 Credential=x, SignedHeaders=host, Signature=0", "Unsupported"),
        ("AWS4-HMAC-SHA256 Credential=x", "requires 'Signature' parameter"),
        ("AWS4-HMAC-SHA256 garbage", "requires 'Credential' parameter"),
        ("AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=0", "5 slash"),
        ("", "Unsupported"),
    ],
)
def test_a_malformed_authorization_header_is_an_incomplete_signature(
    authorization: str, words: str
) -> None:
    req = SignedRequest("GET", "/", "", [("Host", "h"), ("Authorization", authorization)])
    err = refusal(req)
    assert err.code == "IncompleteSignatureException" and words in err.message


def test_host_must_be_signed() -> None:
    err = refusal(request(signed="x-amz-date"))
    assert err.code == "IncompleteSignatureException" and "'Host'" in err.message


def test_a_request_without_a_date_is_refused() -> None:
    auth = f"AWS4-HMAC-SHA256 Credential={KEY_ID}/{SCOPE}, SignedHeaders=host, Signature=0"
    req = SignedRequest("GET", "/", "", [("Host", "h"), ("Authorization", auth)])
    err = refusal(req)
    assert err.code == "IncompleteSignatureException" and "X-Amz-Date" in err.message


def test_a_declared_content_sha256_must_be_the_bodys() -> None:
    req = request(headers=[("X-Amz-Content-SHA256", "0" * 64)])
    err = refusal(req)
    assert err.code == "InvalidSignatureException" and "x-amz-content-sha256" in err.message


def test_check_headers_refuses_before_any_body() -> None:
    # Everything but the signature is decided on the headers: no body needed to refuse.
    with pytest.raises(AuthError):
        verifier().check_headers(request(credential=f"AKIDOTHERKEY0000/{SCOPE}"))
    assert verifier().check_headers(request()).key.access_key_id == KEY_ID


# ---- the policy ----------------------------------------------------------------------------


def principal(**extra: Any) -> Any:
    return verifier(**extra).verify(request(), b"")


def test_a_key_may_perform_only_its_actions() -> None:
    v = verifier(actions=["lambda:ListFunctions"])
    p = v.verify(request(), b"")
    v.authorize(p, "lambda:ListFunctions", "*")
    with pytest.raises(AuthError) as info:
        v.authorize(p, "lambda:InvokeFunction", "arn:aws:lambda:us-east-1:1:function:f", "f")
    assert info.value.code == "AccessDeniedException"
    assert info.value.message == (
        "User: arn:aws:iam::123456789012:user/AKIDEXAMPLE is not authorized to perform: "
        "lambda:InvokeFunction on resource: arn:aws:lambda:us-east-1:1:function:f because no "
        "identity-based policy allows the lambda:InvokeFunction action"
    )


@pytest.mark.parametrize(
    ("resources", "allowed", "denied"),
    [
        (["*"], ["orders", "billing"], []),
        (["orders-*"], ["orders-eu", "orders-"], ["orders", "billing"]),
        (["orders", "billing"], ["orders", "billing"], ["orders-eu"]),
        (["arn:aws:lambda:*:*:function:bill*"], ["billing"], ["orders"]),
    ],
)
def test_a_key_may_invoke_only_its_functions(
    resources: list[str], allowed: list[str], denied: list[str]
) -> None:
    v = verifier(actions=["lambda:*"], resources=resources, name="ci")
    p = v.verify(request(), b"")
    assert p.arn == "arn:aws:iam::123456789012:user/ci"
    for fn in allowed:
        v.authorize(p, "lambda:InvokeFunction", f"arn:aws:lambda:us-east-1:1:function:{fn}", fn)
    for fn in denied:
        with pytest.raises(AuthError, match="not authorized"):
            arn = f"arn:aws:lambda:us-east-1:1:function:{fn}"
            v.authorize(p, "lambda:InvokeFunction", arn, fn)


def test_list_functions_needs_a_policy_on_every_resource_as_iam_does() -> None:
    v = verifier(actions=["lambda:ListFunctions"], resources=["orders-*"])
    with pytest.raises(AuthError, match="not authorized"):
        v.authorize(v.verify(request(), b""), "lambda:ListFunctions", "*")


# ---- hostile input -------------------------------------------------------------------------

#: Any text, with the lone surrogates aiohttp uses for bytes that are not UTF-8.
_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(["\udcff", "/", "=", ",", " "]))


@settings(max_examples=300, deadline=None)
@given(
    authorization=st.one_of(
        _TEXT,
        st.builds(
            lambda c, h, sig: (
                f"AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={h}, Signature={sig}"
            ),
            st.one_of(_TEXT, st.just(f"{KEY_ID}/{SCOPE}")),
            st.one_of(_TEXT, st.just("host;x-amz-date")),
            _TEXT,
        ),
    ),
    date=st.one_of(
        _TEXT,
        st.just(AMZ_DATE),
        st.just("\u0662\u0660\u0661\u0665\u0660\u0668\u0663\u0660T123600Z"),
    ),
    path=_TEXT,
    query=_TEXT,
    body=st.binary(max_size=64),
)
def test_any_request_is_verified_or_refused_never_an_exception(
    authorization: str, date: str, path: str, query: str, body: bytes
) -> None:
    headers = [("Host", "h"), ("X-Amz-Date", date), ("Authorization", authorization)]
    try:
        verifier().verify(SignedRequest("POST", "/" + path, query, headers), body)
    except AuthError as exc:
        assert exc.status == 403 and exc.code.endswith("Exception")


# ---- refusal reasons, payload modes, session tokens ----------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("MissingAuthenticationTokenException", "sigv4_missing_authentication_token"),
        ("IncompleteSignatureException", "sigv4_incomplete_signature"),
        ("UnrecognizedClientException", "sigv4_unrecognized_client"),
        ("InvalidSignatureException", "sigv4_invalid_signature"),
        ("AccessDeniedException", "sigv4_access_denied"),
    ],
)
def test_each_refusal_has_its_metric_reason(code: str, reason: str) -> None:
    assert AuthError(code, "m").reason == reason


def test_an_unsigned_payload_signs_the_literal_and_leaves_the_body_unchecked() -> None:
    url = "https://lambda.example/2015-03-31/functions/f/invocations"
    headers = {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    signed = botocore_signed("POST", url, b'{"a": 1}', headers, service="lambda")
    v = SigV4Verifier(
        [key()], region="us-east-1", service="lambda", account_id="1" * 12, now=lambda: SIGNED_AT
    )
    assert v.verify(signed, b'{"a": 1}').access_key_id == KEY_ID
    assert v.verify(signed, b"any other body").access_key_id == KEY_ID
    with pytest.raises(AuthError) as info:  # the headers are still covered
        v.verify(dataclasses.replace(signed, raw_query="Qualifier=x"), b"")
    assert info.value.code == "InvalidSignatureException"


def test_chunked_payload_signing_is_refused_by_name() -> None:
    req = request(headers=[("X-Amz-Content-SHA256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")])
    err = refusal(req)
    assert err.code == "InvalidSignatureException"
    assert "chunked (aws-chunked) payload signing is not supported" in err.message


def test_a_session_token_with_a_long_term_key_is_an_unrecognized_client() -> None:
    req = request(headers=[("X-Amz-Security-Token", "FwoGZXIvYXdzEXAMPLE")])
    err = refusal(req)
    assert err.code == "UnrecognizedClientException"
    assert err.message == "The security token included in the request is invalid."
