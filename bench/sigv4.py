"""What AWS Signature Version 4 costs on the Invoke API: two daemons started in-process side by
side, the same no-op hello function behind each control listener, one with an access key (every
call verified) and one without, in the same run. Both get the same request with the same
signed headers (a signature stays valid for 15 minutes), so the client's work is identical and
the difference is the server's verification.

The two are measured in alternating rounds (signed, unsigned, unsigned, signed, ...: which
goes first alternates too) because these machines are noisy. Latency: sequential
RequestResponse invocations, pooled over the rounds, p50 / p99. Also the verifier alone per
request (in a loop, no HTTP) against a bare SHA-256 of the body plus one HMAC, the least any
signature check does.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import SecretStr

from bench import HELLO_DIR, BenchError, Row, percentile, run_async, triggerd_logs_at
from triggerd.config.access import AccessKey
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.http.sigv4 import SignedRequest, SigV4Verifier

NAME = "sigv4"
PATH = "/2015-03-31/functions/hello/invocations"
KEY = ("AKIABENCH", "bench-secret-0123456789abcdef0123")
PAYLOAD = b'{"n": 1}'


@dataclass(frozen=True, slots=True)
class Settings:
    #: Sequential invocations per round and server.
    latency_requests: int = 300
    rounds: int = 5
    warmup: int = 100
    #: Verifications timed for the verifier-alone figure.
    verifications: int = 20000


QUICK = Settings(latency_requests=150, rounds=3, warmup=30, verifications=5000)
SMOKE = Settings(latency_requests=5, rounds=2, warmup=2, verifications=50)


def daemon_config(tmp: Path, signed: bool) -> dict[str, object]:
    daemon: dict[str, object] = {
        "state": f"sqlite:///{tmp / 'state.db'}",
        "listen": "",
        "control_listen": "127.0.0.1:0",
        "log_level": "warning",
    }
    if signed:
        daemon["access_keys"] = [
            {"access_key_id": KEY[0], "secret_access_key": KEY[1], "actions": ["lambda:*"]}
        ]
    hello = {"handler": "app.handler", "code": str(HELLO_DIR), "timeout_s": 30}
    return {"daemon": daemon, "functions": {"hello": {**hello, "reserved_concurrency": 1}}}


@asynccontextmanager
async def daemons() -> AsyncIterator[dict[str, str]]:
    """The two daemons' Invoke URLs, by kind ("signed", "unsigned")."""
    registry = Registry.discover()
    # The function's START/END/REPORT lines are INFO.
    with triggerd_logs_at(logging.WARNING):
        async with AsyncExitStack() as stack:
            urls = {}
            for kind in ("unsigned", "signed"):
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
                cfg = validate_data(daemon_config(tmp, kind == "signed"), registry, tmp)
                daemon = await stack.enter_async_context(
                    Daemon(cfg, registry).running(start_timeout_s=60, stop_timeout_s=60)
                )
                urls[kind] = f"http://{daemon.control_address}{PATH}"
            yield urls


def signed_headers(url: str) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=PAYLOAD)
    SigV4Auth(Credentials(*KEY), "lambda", "us-east-1").add_auth(request)
    return dict(request.headers.items())


async def latencies_ms(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int
) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        async with session.post(url, data=PAYLOAD, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise BenchError(f"unexpected answer {resp.status} {body[:200]!r}")
        out.append((clock() - t0) / 1e6)
    return out


async def measure(settings: Settings) -> dict[str, list[float]]:
    pooled: dict[str, list[float]] = {"signed": [], "unsigned": []}
    async with daemons() as urls, aiohttp.ClientSession() as session:
        # The same headers for both: the unsigned daemon ignores the signature.
        headers = {kind: signed_headers(url) for kind, url in urls.items()}
        for kind, url in urls.items():
            await latencies_ms(session, url, headers[kind], settings.warmup)
        order = list(urls)
        for _ in range(settings.rounds):
            for kind in order:  # which goes first alternates, so neither always follows
                got = await latencies_ms(
                    session, urls[kind], headers[kind], settings.latency_requests
                )
                pooled[kind] += got
            order.reverse()
    return pooled


def verifier_us(count: int) -> tuple[float, float]:
    """Microseconds per verification of a 1 KB Invoke request, and per bare SHA-256 + HMAC."""
    body = b'{"x": "' + b"a" * 1000 + b'"}'
    url = f"http://127.0.0.1:9071{PATH}"
    aws = AWSRequest(method="POST", url=url, data=body)
    SigV4Auth(Credentials(*KEY), "lambda", "us-east-1").add_auth(aws)
    headers = [("Host", "127.0.0.1:9071"), *aws.headers.items()]
    request = SignedRequest("POST", PATH, "", headers)
    key = AccessKey(access_key_id=KEY[0], secret_access_key=SecretStr(KEY[1]), actions=["lambda:*"])
    verifier = SigV4Verifier([key], region="us-east-1", service="lambda", account_id="1" * 12)
    verifier.verify(request, body)  # raises if the setup is wrong
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(count):
        verifier.verify(request, body)
    full = (clock() - t0) / count / 1e3
    t0 = clock()
    for _ in range(count):
        digest = hashlib.sha256(body).hexdigest().encode()
        hmac.new(b"k", digest, hashlib.sha256).hexdigest()
    bare = (clock() - t0) / count / 1e3
    return full, bare


def run(settings: Settings) -> list[Row]:
    pooled = run_async(measure(settings))
    full, bare = verifier_us(settings.verifications)
    signed, unsigned = pooled["signed"], pooled["unsigned"]
    desc = "the same daemon and function without access keys (no verification)"
    return [
        Row(NAME, "signed invoke p50 (ms)", percentile(signed, 50), percentile(unsigned, 50),
            baseline_desc=desc),
        Row(NAME, "signed invoke p99 (ms)", percentile(signed, 99), percentile(unsigned, 99),
            baseline_desc=desc),
        Row(NAME, "verification of a 1 KB request (us)", full, bare, digits=1,
            baseline_desc="a bare SHA-256 of the body and one HMAC-SHA256"),
    ]  # fmt: skip
