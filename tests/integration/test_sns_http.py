"""The `sns_http` source receiving real-format SNS HTTP deliveries: messages signed as SNS signs
them (SignatureVersion 1 and 2) with a certificate from a CA generated here, the certificate
and the SubscribeURL served over HTTPS by a local server on a pinned host; forged and
unverifiable messages refused. One daemon and one HTTPS server for the module."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.sns_support import (
    CERT_PATH,
    SUB,
    TOPIC,
    Pki,
    make_pki,
    sign_message,
    sns_message,
)
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

FUNCTIONS = Path(__file__).parent / "functions"


@dataclass
class Running:
    daemon: Daemon
    url: str
    cert_base: str
    tmp: Path
    pki: Pki
    http: aiohttp.ClientSession
    hits: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        path = self.tmp / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def message(
        self, kind: str = "Notification", version: str = "1", **fields: Any
    ) -> dict[str, Any]:
        return sns_message(self.cert_base, kind, version, **fields)

    def sign(self, doc: dict[str, Any], key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
        return sign_message(doc, key or self.pki.signing_key)

    async def post(self, doc: dict[str, Any] | bytes, path: str = "/sns/in") -> tuple[int, bytes]:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-subscription-arn": SUB,
        }
        if isinstance(doc, dict):
            headers["x-amz-sns-message-type"] = str(doc.get("Type"))
        data = io.BytesIO(body) if len(body) > 1024 * 1024 else body
        async with self.http.post(self.url + path, data=data, headers=headers) as resp:
            return resp.status, await resp.read()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("sns_http")
    pki = await asyncio.to_thread(make_pki, tmp)
    hits: list[str] = []

    async def cert(request: web.Request) -> web.Response:
        hits.append("cert")
        return web.Response(body=pki.signing_pem)

    async def confirm(request: web.Request) -> web.Response:
        hits.append("confirm:" + request.query.get("Token", ""))
        return web.Response(text="<ConfirmSubscriptionResponse/>")

    async def missing(request: web.Request) -> web.Response:
        hits.append("missing")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get(CERT_PATH, cert)
    app.router.add_get("/missing.pem", missing)
    app.router.add_get("/confirm", confirm)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    registry = Registry.discover()
    data = {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "listen": "127.0.0.1:0",
            "control_listen": "",
            "work_dir": str(tmp / "run"),
            "shutdown_timeout_s": 5,
        },
        "functions": {
            "receiver": {
                "handler": "app.handler",
                "code": str(FUNCTIONS / "sns_recorder"),
                "timeout_s": 5,
                "environment": {"RECORD_FILE": str(tmp / "calls.jsonl")},
            }
        },
        "triggers": [
            {
                "function": "receiver",
                "source": {
                    "type": "sns_http",
                    "path": "/sns/in",
                    "topics": [TOPIC],
                    "cert_hosts": [f"127.0.0.1:{port}"],
                    "ca_file": str(pki.ca_file),
                },
            },
            {
                "name": "unconfirmed",
                "function": "receiver",
                "source": {
                    "type": "sns_http",
                    "path": "/sns/manual",
                    "topics": [TOPIC],
                    "cert_hosts": [f"127.0.0.1:{port}"],
                    "ca_file": str(pki.ca_file),
                    "confirm_subscriptions": False,
                },
            },
            {
                "name": "dlq",
                "function": "receiver",
                "maximum_retry_attempts": 1,
                "retry_base_delay_s": 0.2,
                "on_failure": {"type": "file", "path": str(tmp / "dlq.jsonl")},
                "source": {
                    "type": "sns_http",
                    "path": "/sns/dlq",
                    "topics": [TOPIC],
                    "cert_hosts": [f"127.0.0.1:{port}"],
                    "ca_file": str(pki.ca_file),
                },
            },
        ],
    }
    cfg = validate_data(data, registry, base_dir=tmp)
    try:
        async with Daemon(cfg, registry).running() as daemon, aiohttp.ClientSession() as http:
            yield Running(
                daemon,
                f"http://{daemon.listen_address}",
                f"https://127.0.0.1:{port}",
                tmp,
                pki,
                http,
                hits,
            )
    finally:
        await runner.cleanup()


async def wait_for_record(r: Running, message_id: str) -> dict[str, Any]:
    for _ in range(300):
        for rec in r.records():
            if rec["event"]["Records"][0]["Sns"]["MessageId"] == message_id:
                return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} was not delivered")


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_signed_notification_is_verified_and_invoked(
    running: Running, version: str
) -> None:
    doc = running.sign(running.message(version=version))
    status, body = await running.post(doc)
    assert status == 200, body
    rec = await wait_for_record(running, doc["MessageId"])
    record = rec["event"]["Records"][0]
    assert record["EventSource"] == "aws:sns" and record["EventVersion"] == "1.0"
    assert record["EventSubscriptionArn"] == SUB
    assert record["Sns"] == {
        "Type": "Notification",
        "MessageId": doc["MessageId"],
        "TopicArn": TOPIC,
        "Subject": "Subj",
        "Message": "hello",
        "Timestamp": doc["Timestamp"],
        "SignatureVersion": version,
        "Signature": doc["Signature"],
        "SigningCertUrl": doc["SigningCertURL"],
        "UnsubscribeUrl": doc["UnsubscribeURL"],
        "MessageAttributes": {"kind": {"Type": "String", "Value": "big"}},
    }
    fetched = running.hits.count("cert")
    again = running.sign(running.message(version=version))
    assert (await running.post(again))[0] == 200
    assert running.hits.count("cert") == fetched, "the certificate is cached"


async def test_forged_and_unverifiable_messages_are_refused(running: Running) -> None:
    good = running.sign(running.message())
    tampered = {**good, "Message": "transfer everything"}
    other_key = running.sign(running.message(), running.pki.other_key)
    wrong_host = running.sign(
        running.message(SigningCertURL="https://sns.us-east-1.amazonaws.com.evil.test/c.pem")
    )
    plain_http = running.sign(
        running.message(SigningCertURL=running.cert_base.replace("https", "http") + "/x.pem")
    )
    other_topic = running.sign(running.message(TopicArn=TOPIC + "-other"))
    bad_version = {**running.message(version="3"), "Signature": good["Signature"]}
    for doc in (tampered, other_key, wrong_host, plain_http, other_topic, bad_version):
        status, _ = await running.post(doc)
        assert status == 403, doc
    for raw, want in ((b"not json", 400), (b'{"Type": "Other"}', 400), (b"[1]", 400)):
        status, _ = await running.post(raw)
        assert status == want
    status, _ = await running.post(b"x" * (2 * 1024 * 1024))
    assert status == 413
    # A positive barrier: the genuine message, sent last, is delivered, and then nothing is
    # left queued, so a refused message that had been queued would have been recorded too.
    last = running.sign(running.message())
    assert (await running.post(last))[0] == 200
    await wait_for_record(running, last["MessageId"])
    state = running.daemon.state
    assert state is not None
    for _ in range(300):
        if await state.queue_depth() == 0:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the queue never drained")
    delivered = {r["event"]["Records"][0]["Sns"]["MessageId"] for r in running.records()}
    assert tampered["MessageId"] not in delivered and other_key["MessageId"] not in delivered


async def test_subscription_confirmation_gets_the_subscribe_url(running: Running) -> None:
    doc = running.sign(running.message("SubscriptionConfirmation"))
    status, _ = await running.post(doc)
    assert status == 200
    assert "confirm:" + doc["Token"] in running.hits
    off_host = running.sign(
        running.message("SubscriptionConfirmation", SubscribeURL="https://example.com/c")
    )
    status, _ = await running.post(off_host)
    assert status == 403
    unsub = running.sign(running.message("UnsubscribeConfirmation"))
    assert (await running.post(unsub))[0] == 200


async def test_a_certificate_that_cannot_be_fetched_is_not_fetched_again_at_once(
    running: Running,
) -> None:
    for _ in range(3):
        doc = running.sign(running.message(SigningCertURL=running.cert_base + "/missing.pem"))
        status, _ = await running.post(doc)
        assert status == 403
    assert running.hits.count("missing") == 1


async def test_confirmation_can_be_left_to_the_operator(running: Running) -> None:
    doc = running.sign(running.message("SubscriptionConfirmation"))
    status, _ = await running.post(doc, "/sns/manual")
    assert status == 200
    assert "confirm:" + doc["Token"] not in running.hits
    forged = {**doc, "Token": "other"}
    assert (await running.post(forged, "/sns/manual"))[0] == 403


async def test_a_poison_notification_ends_in_the_on_failure_destination_alone(
    running: Running,
) -> None:
    """SNS gets its 200 for every notification (it is queued); the one the function always
    fails on is retried once, then goes to the trigger's destination, once; those after it are
    invoked meanwhile."""
    docs = [running.sign(running.message(Message=m)) for m in ("fail: poison", "fine-1", "fine-2")]
    for doc in docs:
        status, body = await running.post(doc, path="/sns/dlq")
        assert status == 200, body
    for doc in docs[1:]:
        await wait_for_record(running, doc["MessageId"])
    state = running.daemon.state
    assert state is not None
    for _ in range(600):  # the poison's retry and its failure record, then the queue is empty
        if not await state.queue_depth("dlq"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the dlq trigger's queue never drained")
    [failed] = [json.loads(line) for line in (running.tmp / "dlq.jsonl").read_text().splitlines()]
    assert failed["requestContext"]["condition"] == "RetriesExhausted"
    assert failed["requestContext"]["approximateInvokeCount"] == 2
    sns = failed["requestPayload"]["Records"][0]["Sns"]
    assert (sns["MessageId"], sns["Message"]) == (docs[0]["MessageId"], "fail: poison")
    assert failed["responsePayload"]["errorType"] == "ValueError"
