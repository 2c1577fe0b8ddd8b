"""AWS Signature Version 4 (AWS4-HMAC-SHA256 in the Authorization header), verified against the
access keys configured in triggerd, for every AWS-compatible API the daemon serves.

`SigV4Verifier.check_headers` checks what the headers alone decide (the key is known, the date
is current, the credential scope fits this endpoint, `host` is signed), so a request that fails
there is refused before its body is read; `verify` then recomputes the signature over the body's
SHA-256. Both raise `AuthError`, which each API renders in its own shape (the Invoke API's JSON,
a Query API's XML); `authorize` applies a key's policy to an action and a resource.

Written here with hashlib/hmac rather than through botocore's `SigV4Auth`: botocore is a
signer, not a verifier. It chooses the signed headers itself (it adds `host` from the URL and
never signs `user-agent`, `expect` or `x-amzn-trace-id`) and reads its own clock, so it cannot
recompute the signature of a client that signed another list of headers at another time; a
verifier has to follow the client's `SignedHeaders` and `X-Amz-Date`. The tests use botocore as
the independent reference signer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from aiohttp import web

from triggerd.config.access import AccessKey

__all__ = [
    "ALGORITHM",
    "UNSIGNED_PAYLOAD",
    "AuthError",
    "Credential",
    "Principal",
    "SigV4Verifier",
    "SignedRequest",
    "canonical_request",
    "payload_sha256",
    "signed_request",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
#: The x-amz-content-sha256 value of a request whose body the signature does not cover.
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: How far X-Amz-Date may be from the server's clock, either way (AWS's 15 minutes).
MAX_SKEW = timedelta(minutes=15)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_UNRESERVED = "-_.~"
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
_SIGNING_KEYS_CACHED = 256
#: Bodies larger than this are hashed off the event loop.
_HASH_IN_THREAD = 256 * 1024


class AuthError(Exception):
    """A refused request, with the status, error code and message AWS answers it with."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    @property
    def reason(self) -> str:
        """The refusal's reason in `triggerd_http_refused_total{listener,reason}`: `sigv4_` and the
        code in snake_case without `Exception` (`sigv4_invalid_signature`)."""
        words = re.findall(r"[A-Z][a-z0-9]*", self.code.removesuffix("Exception"))
        return "sigv4_" + "_".join(w.lower() for w in words)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What SigV4 covers of an HTTP request: the method, the path and query exactly as they
    came on the wire (still percent-encoded) and the headers (one entry per header line)."""

    method: str
    raw_path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]

    def header(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for k, v in self.headers if k.lower() == lowered]


@dataclass(frozen=True, slots=True)
class Credential:
    """A parsed Authorization header whose key, date and scope passed `check_headers`."""

    key: AccessKey
    amz_date: str
    scope: str
    signed_headers: tuple[str, ...]
    signature: str


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a valid signature identifies."""

    key: AccessKey
    arn: str

    @property
    def access_key_id(self) -> str:
        return self.key.access_key_id


# --------------------------------------------------------------------------------------------
# The signature's parts (the AWS General Reference's "Create a signed AWS API request")


def canonical_uri(raw_path: str) -> str:
    """The path with dot segments and empty segments removed, then URI-encoded once more (every
    AWS service but S3 signs the already encoded path encoded again, as AWS's SDKs do)."""
    segments: list[str] = []
    for seg in raw_path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    path = "/" + "/".join(segments)
    if raw_path.endswith("/") and segments:
        path += "/"
    return quote(path, safe="/~", errors="surrogateescape")


def canonical_query(raw_query: str) -> str:
    """Each name and value decoded and encoded again as RFC 3986 wants, sorted by name then
    value, so that clients that encode differently (or not at all) sign the same string."""
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_encode(name), _encode(value)))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _encode(text: str) -> str:
    """Decoded once, then percent-encoded as RFC 3986 wants (bytes that are not UTF-8, as a
    hostile client may send, kept as the bytes they were)."""
    raw = unquote(text, errors="surrogateescape")
    return quote(raw, safe=_UNRESERVED, errors="surrogateescape")


def canonical_headers(request: SignedRequest, signed: Iterable[str]) -> str:
    lines = []
    for name in signed:
        values = [" ".join(v.split()) for v in request.header(name)]
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def canonical_request(request: SignedRequest, signed: Sequence[str], payload_hash: str) -> str:
    return "\n".join(
        [
            request.method.upper(),
            canonical_uri(request.raw_path),
            canonical_query(request.raw_query),
            canonical_headers(request, signed),
            ";".join(signed),
            payload_hash,
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


# --------------------------------------------------------------------------------------------
# Verification


def _parse_authorization(value: str) -> tuple[str, str, str, str]:
    """(algorithm, credential, signed headers, signature) of an Authorization header."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise AuthError(
            "IncompleteSignatureException",
            f"Unsupported AWS 'algorithm': {algorithm[:40]!r} (only {ALGORITHM} is supported)",
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if sep:
            fields[name] = val.strip()
    missing = [n for n in ("Credential", "Signature", "SignedHeaders") if not fields.get(n)]
    if missing:
        raise AuthError(
            "IncompleteSignatureException",
            " ".join(f"Authorization header requires '{n}' parameter." for n in missing),
        )
    return algorithm, fields["Credential"], fields["SignedHeaders"], fields["Signature"]


def _request_time(request: SignedRequest) -> tuple[str, datetime]:
    """X-Amz-Date (or, failing that, Date) as text in AWS's basic format and as a time."""
    amz = request.header("x-amz-date")
    if amz:
        try:
            when = datetime.strptime(amz[0].strip(), _AMZ_DATE).replace(tzinfo=UTC)
        except ValueError:
            raise AuthError(
                "IncompleteSignatureException",
                "X-Amz-Date must be in the ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z'.",
            ) from None
        return amz[0].strip(), when
    date = request.header("date")
    if date:
        parsed: datetime | None
        try:
            parsed = parsedate_to_datetime(date[0]).astimezone(UTC)
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
        if parsed is not None:
            return parsed.strftime(_AMZ_DATE), parsed
    raise AuthError(
        "IncompleteSignatureException",
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
    )


class SigV4Verifier:
    """Checks SigV4 signatures for one service of this endpoint (`lambda`, later `sns`,
    `events`) against the configured keys."""

    def __init__(
        self,
        keys: Sequence[AccessKey],
        *,
        region: str,
        service: str,
        account_id: str,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._keys = {k.access_key_id: k for k in keys}
        self.region = region
        self.service = service
        self.account_id = account_id
        self._now = now
        self._signing_keys: dict[tuple[str, str], bytes] = {}

    def check_headers(self, request: SignedRequest) -> Credential:
        """Everything the headers alone decide; AuthError when the request is refused."""
        authorization = request.header("authorization")
        if not authorization:
            raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
        _, credential, signed, signature = _parse_authorization(authorization[0])
        parts = credential.split("/")
        if len(parts) != 5:
            raise AuthError(
                "IncompleteSignatureException",
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                "keyID/date/region/service/term",
            )
        key_id, scope_date, region, service, terminator = parts
        key = self._keys.get(key_id)
        # Only long-term keys exist here: a session token (temporary credentials from STS)
        # belongs to no key, and AWS refuses a long-term key sent with one the same way.
        if key is None or request.header("x-amz-security-token"):
            raise AuthError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        amz_date, when = _request_time(request)
        self._check_clock(amz_date, when)
        self._check_scope(amz_date, scope_date, region, service, terminator)
        names = tuple(signed.split(";"))
        if "host" not in names:
            raise AuthError(
                "IncompleteSignatureException",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            )
        scope = "/".join(parts[1:])
        return Credential(key, amz_date, scope, names, signature.lower())

    def verify(self, request: SignedRequest, body: bytes) -> Principal:
        """The caller, once the whole request (body included) is checked."""
        return self.verify_hashed(request, hashlib.sha256(body).hexdigest())

    def verify_hashed(
        self, request: SignedRequest, payload_hash: str, credential: Credential | None = None
    ) -> Principal:
        """`verify` with the body's SHA-256 (hex) computed by the caller (off the event loop
        for a large body); `credential` from an earlier `check_headers` of this request."""
        cred = credential or self.check_headers(request)
        declared = request.header("x-amz-content-sha256")
        signed_hash = payload_hash
        if declared:
            value = declared[0].strip()
            if value == UNSIGNED_PAYLOAD:
                # SigV4's unsigned payload: the literal is what was signed, and the body
                # is not covered by the signature.
                signed_hash = UNSIGNED_PAYLOAD
            elif value.startswith("STREAMING-"):
                raise AuthError(
                    "InvalidSignatureException",
                    f"x-amz-content-sha256 {value[:60]!r}: chunked (aws-chunked) payload "
                    "signing is not supported; sign the whole payload or send "
                    f"{UNSIGNED_PAYLOAD}",
                )
            elif value.lower() != payload_hash:
                raise AuthError(
                    "InvalidSignatureException",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                )
        canonical = canonical_request(request, cred.signed_headers, signed_hash)
        to_sign = string_to_sign(cred.amz_date, cred.scope, canonical)
        key = self._signing_key(cred.key, cred.scope.split("/")[0])
        expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        given = cred.signature.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(expected.encode("ascii"), given):
            raise AuthError("InvalidSignatureException", _MISMATCH)
        arn = f"arn:aws:iam::{self.account_id}:user/{cred.key.user}"
        return Principal(cred.key, arn)

    def authorize(self, principal: Principal, action: str, resource_arn: str, *names: str) -> None:
        """AccessDeniedException unless the caller's policy allows `action` on the resource
        (matched by its ARN or any of its other `names`)."""
        if not principal.key.allows(action, (resource_arn, *names)):
            raise AuthError(
                "AccessDeniedException",
                f"User: {principal.arn} is not authorized to perform: {action} on resource: "
                f"{resource_arn} because no identity-based policy allows the {action} action",
            )

    def _check_clock(self, amz_date: str, when: datetime) -> None:
        now = datetime.fromtimestamp(self._now(), UTC)
        stamp = now.strftime(_AMZ_DATE)
        if when < now - MAX_SKEW:
            earliest = (now - MAX_SKEW).strftime(_AMZ_DATE)
            raise AuthError(
                "InvalidSignatureException",
                f"Signature expired: {amz_date} is now earlier than {earliest} ({stamp} - 15 min.)",
            )
        if when > now + MAX_SKEW:
            latest = (now + MAX_SKEW).strftime(_AMZ_DATE)
            raise AuthError(
                "InvalidSignatureException",
                f"Signature not yet current: {amz_date} is still later than {latest} "
                f"({stamp} + 15 min.)",
            )

    def _check_scope(
        self, amz_date: str, scope_date: str, region: str, service: str, terminator: str
    ) -> None:
        if scope_date != amz_date[:8]:
            raise AuthError(
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: {scope_date[:20]!r} != {amz_date[:8]!r}, from {amz_date!r}.",
            )
        if region != self.region:
            raise AuthError(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not {region[:40]!r}. "
                f"This endpoint's region is {self.region!r}.",
            )
        if service != self.service:
            raise AuthError(
                "InvalidSignatureException",
                f"Credential should be scoped to correct service: {self.service!r}.",
            )
        if terminator != "aws4_request":
            raise AuthError(
                "InvalidSignatureException",
                "Credential should be scoped with a valid terminator: 'aws4_request', "
                f"not {terminator[:40]!r}.",
            )

    def _signing_key(self, key: AccessKey, date: str) -> bytes:
        cache_key = (key.access_key_id, date)
        found = self._signing_keys.get(cache_key)
        if found is None:
            if len(self._signing_keys) >= _SIGNING_KEYS_CACHED:
                self._signing_keys.clear()
            secret = key.secret_access_key.get_secret_value()
            found = signing_key(secret, date, self.region, self.service)
            self._signing_keys[cache_key] = found
        return found


def signed_request(request: web.BaseRequest) -> SignedRequest:
    """The parts of an aiohttp request that SigV4 covers, exactly as they came on the wire."""
    path, _, query = request.raw_path.partition("?")
    return SignedRequest(request.method, path, query, list(request.headers.items()))


async def payload_sha256(body: bytes) -> str:
    """The body's SHA-256 (hex), computed off the event loop when the body is large."""
    if len(body) > _HASH_IN_THREAD:
        return await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())
    return hashlib.sha256(body).hexdigest()
