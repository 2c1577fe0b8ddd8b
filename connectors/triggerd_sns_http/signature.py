"""Verifying the messages a real SNS topic sends to an HTTP(S) endpoint, as AWS's documentation
says a subscriber must ("Verifying the signatures of Amazon SNS messages"):

- the string to sign is built from the message's fields in a fixed order, `Name\\nValue\\n`
  each: Message, MessageId, Subject (only when present), Timestamp, TopicArn, Type for a
  Notification; Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type for a
  SubscriptionConfirmation or UnsubscribeConfirmation;
- SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA (PKCS#1 v1.5), over that string, with
  the key of the X.509 certificate at SigningCertURL;
- the certificate is fetched only over https from a pinned host (SNS's own,
  `sns.<region>.amazonaws.com`, by default), with a timeout and a size cap, and cached.

RSA and X.509 come from the `cryptography` package; the fetch is aiohttp's client."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

__all__ = ["CertificateCache", "VerificationError", "string_to_sign", "url_allowed", "verify"]

_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
MAX_CERT_BYTES = 16 * 1024
CACHED_CERTS = 32
#: A URL whose fetch failed is not fetched again for this long (a flood of messages naming
#: missing certificates on a pinned host must not become a flood of fetches).
FAILED_FETCH_S = 60.0
#: Fetches under way at once, for all URLs.
MAX_FETCHES = 4


class VerificationError(Exception):
    """The message cannot be trusted: the reason (never the message's content)."""


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    kind = message.get("Type")
    if kind == "Notification":
        keys: Sequence[str] = _NOTIFICATION_KEYS
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        keys = _CONFIRMATION_KEYS
    else:
        raise VerificationError(f"unknown message Type {str(kind)[:40]!r}")
    parts = []
    for key in keys:
        value = message.get(key)
        if value is None:
            if key == "Subject":
                continue
            raise VerificationError(f"the message has no {key}")
        if not isinstance(value, str):
            raise VerificationError(f"{key} is not a string")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def url_allowed(url: str, hosts: Sequence[str]) -> bool:
    """Whether `url` is https on one of `hosts` (host, or host:port), with no user info."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or parts.username or parts.password or not parts.hostname:
        return False
    host = parts.hostname.lower()
    netloc = host if port is None else f"{host}:{port}"
    return netloc in {h.lower() for h in hosts}


#: A region's name: letters and digits between dashes, never a dot, so the host made from it
#: stays `sns.<region>.amazonaws.com` (a "region" like `s3` or `s3.us-east-1` would name an
#: S3 bucket's virtual host, `sns.s3.amazonaws.com`, whose content its owner controls).
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")


def default_hosts(topic_arn: str) -> list[str]:
    """SNS's own host for the region of the topic the message names (none when that is not
    a region's name)."""
    parts = topic_arn.split(":")
    if len(parts) < 6 or parts[0] != "arn" or parts[2] != "sns" or not _REGION.match(parts[3]):
        return []
    region = parts[3]
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return [f"sns.{region}.{suffix}"]


def verify(message: Mapping[str, Any], pem: bytes, now: float | None = None) -> None:
    """VerificationError unless `message`'s Signature is valid for the certificate `pem`
    (which must be valid now)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    version = message.get("SignatureVersion")
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise VerificationError(f"unknown SignatureVersion {str(version)[:10]!r}")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except binascii.Error:
        raise VerificationError("the Signature is not base64") from None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise VerificationError("the signing certificate is not a PEM certificate") from None
    when = time.time() if now is None else now
    if not (cert.not_valid_before_utc.timestamp() <= when <= cert.not_valid_after_utc.timestamp()):
        raise VerificationError("the signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerificationError("the signing certificate's key is not RSA")
    try:
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise VerificationError("the signature does not match") from None


class CertificateCache:
    """Signing certificates by URL: fetched once (with a timeout and a size cap), kept for
    `ttl_s`, at most CACHED_CERTS of them; concurrent fetches of one URL share one request."""

    def __init__(
        self, *, timeout_s: float, ttl_s: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.ssl_context = ssl_context
        self._certs: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[bytes]] = {}
        self._failed: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._slots = asyncio.Semaphore(MAX_FETCHES)
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0

    async def close(self) -> None:
        for task in self._fetching.values():
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or True, limit=8)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                auto_decompress=False,
            )
        return self._session

    async def get(self, url: str) -> bytes:
        found = self._certs.get(url)
        now = time.monotonic()
        if found is not None and now - found[0] < self.ttl_s:
            self._certs.move_to_end(url)
            return found[1]
        failed = self._failed.get(url)
        if failed is not None and now - failed[0] < FAILED_FETCH_S:
            raise VerificationError(failed[1])
        task = self._fetching.get(url)
        if task is None:
            task = asyncio.ensure_future(self._fetch(url))
            self._fetching[url] = task
            task.add_done_callback(lambda t: self._fetched(url, t))
        try:
            pem = await asyncio.shield(task)
        except VerificationError as exc:
            self._failed[url] = (time.monotonic(), str(exc))
            while len(self._failed) > CACHED_CERTS:
                self._failed.popitem(last=False)
            raise
        self._certs[url] = (time.monotonic(), pem)
        self._certs.move_to_end(url)
        while len(self._certs) > CACHED_CERTS:
            self._certs.popitem(last=False)
        return pem

    def _fetched(self, url: str, task: asyncio.Task[bytes]) -> None:
        self._fetching.pop(url, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have been cancelled

    async def _fetch(self, url: str) -> bytes:
        async with self._slots:
            return await self._fetch_now(url)

    async def _fetch_now(self, url: str) -> bytes:
        self.fetches += 1
        try:
            async with self.session().get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise VerificationError(f"the signing certificate answered {resp.status}")
                body = await resp.content.read(MAX_CERT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise VerificationError(
                f"the signing certificate could not be fetched: {type(exc).__name__}"
            ) from None
        if len(body) > MAX_CERT_BYTES:
            raise VerificationError(f"the signing certificate is over {MAX_CERT_BYTES} bytes")
        return body
