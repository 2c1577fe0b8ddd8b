"""The `sns_http` source: SNS's HTTP(S) deliveries to a route on the public listener.

Checks, in order: the declared body size (413), the body (413, 408), JSON with a known `Type`
(400), the topic (403 unless listed), the certificate URL (403 unless https on a pinned host),
the signature over AWS's string to sign (403). Then:

- SubscriptionConfirmation: GET of its SubscribeURL (pinned like the certificate), 200 once
  SNS confirmed it (502 when it did not); with `confirm_subscriptions = false` logged only;
- UnsubscribeConfirmation: logged, 200;
- Notification: the `aws:sns` event goes to the durable queue (the async path: retries,
  maximum event age, on-failure destination) and SNS gets 200 once it is stored; 503 when that
  does not happen within `accept_timeout_s` (SNS retries). The queue's request id is derived
  from the MessageId, so a notification SNS delivers twice is queued once."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from triggerd.http.body import BodyTooLarge, read_body
from triggerd.http.pushed import Pending, PushedSource
from triggerd.http.refusals import mark_refused
from triggerd.types import ConfigError, JSONDict, Record, SourceContext
from triggerd_sns_http.config import SnsHttpSourceConfig
from triggerd_sns_http.signature import (
    TYPES,
    CertificateCache,
    VerificationError,
    default_hosts,
    url_allowed,
    verify,
)

__all__ = ["SnsHttpSource", "lambda_event"]


def lambda_event(message: dict[str, Any], subscription_arn: str) -> JSONDict:
    """The `aws:sns` event Lambda would get for this HTTP notification."""
    sns = {
        "Type": message["Type"],
        "MessageId": message["MessageId"],
        "TopicArn": message["TopicArn"],
        "Subject": message.get("Subject"),
        "Message": message["Message"],
        "Timestamp": message["Timestamp"],
        "SignatureVersion": message["SignatureVersion"],
        "Signature": message["Signature"],
        "SigningCertUrl": message["SigningCertURL"],
        "UnsubscribeUrl": message.get("UnsubscribeURL", ""),
        "MessageAttributes": message.get("MessageAttributes") or {},
    }
    record = {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": subscription_arn,
        "Sns": sns,
    }
    return {"Records": [record]}


class _Refused(Exception):
    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


class SnsHttpSource(PushedSource):
    """Its pipeline side is PushedSource's: a notification SNS got 503 for is skipped."""

    def __init__(self, config: SnsHttpSourceConfig, ctx: SourceContext) -> None:
        super().__init__()
        self.config = config
        self.ctx = ctx
        self.log = ctx.log
        self._stopping = False
        self.certs: CertificateCache | None = None
        self.topics = frozenset(config.topics)

    # ---- lifecycle ----

    async def start(self) -> None:
        cfg, ctx = self.config, self.ctx
        if ctx.http is None:
            raise ConfigError([f"trigger {ctx.trigger}: sns_http needs daemon.listen"])
        context = None
        if cfg.ca_file is not None:
            context = await asyncio.to_thread(ssl.create_default_context, cafile=cfg.ca_file)
        self.certs = CertificateCache(
            timeout_s=cfg.fetch_timeout_s, ttl_s=cfg.cert_cache_s, ssl_context=context
        )
        try:
            ctx.http.add_route("POST", cfg.path, self.handle, owner=ctx.trigger)
        except ValueError as exc:
            raise ConfigError([f"trigger {ctx.trigger}: {exc}"]) from None
        if not cfg.topics:
            self.log.warning(
                "sns_http.any_topic",
                extra={"trigger": ctx.trigger, "path": cfg.path},
            )
        self.log.info("sns_http.route_added", extra={"trigger": ctx.trigger, "path": cfg.path})

    async def stop(self) -> None:
        self._stopping = True
        if self.ctx.http is not None:
            self.ctx.http.remove_routes(self.ctx.trigger)
        self._pending.refuse_all()
        if self.certs is not None:
            await self.certs.close()

    # ---- the HTTP side ----

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            message = await self._verified(request)
            return await self._act(request, message)
        except _Refused as exc:
            mark_refused(request, exc.reason)
            self.log.info(
                "sns_http.refused",
                extra={"trigger": self.ctx.trigger, "reason": exc.reason, "detail": exc.detail},
            )
            return web.json_response({"message": exc.reason}, status=exc.status)

    async def _verified(self, request: web.BaseRequest) -> dict[str, Any]:
        cfg = self.config
        try:
            body = await read_body(request, cfg.max_body_bytes)
        except BodyTooLarge:
            raise _Refused(413, "body_too_large") from None
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Refused(400, "not_json") from None
        if not isinstance(message, dict) or message.get("Type") not in TYPES:
            raise _Refused(400, "not_an_sns_message")
        declared = request.headers.get("x-amz-sns-message-type")
        if declared is not None and declared != message["Type"]:
            raise _Refused(400, "message_type_mismatch")
        topic = message.get("TopicArn")
        if not isinstance(topic, str) or (self.topics and topic not in self.topics):
            raise _Refused(403, "topic_not_allowed", str(topic)[:200])
        hosts = cfg.cert_hosts or default_hosts(topic)
        cert_url = message.get("SigningCertURL")
        if not isinstance(cert_url, str) or not url_allowed(cert_url, hosts):
            raise _Refused(403, "certificate_url_not_allowed", str(cert_url)[:200])
        assert self.certs is not None
        try:
            pem = await self.certs.get(cert_url)
            verify(message, pem, self.ctx.clock.time())
        except VerificationError as exc:
            raise _Refused(403, "signature_not_verified", str(exc)) from None
        return message

    async def _act(self, request: web.BaseRequest, message: dict[str, Any]) -> web.Response:
        kind = message["Type"]
        extra = {"trigger": self.ctx.trigger, "topic": message["TopicArn"]}
        if kind == "UnsubscribeConfirmation":
            self.log.info("sns_http.unsubscribed", extra=extra)
            return web.Response(status=200)
        if kind == "SubscriptionConfirmation":
            return await self._confirm(message, extra)
        return await self._enqueue(request, message)

    async def _confirm(self, message: dict[str, Any], extra: dict[str, Any]) -> web.Response:
        if not self.config.confirm_subscriptions:
            self.log.warning("sns_http.confirmation_not_sent", extra=extra)
            return web.Response(status=200)
        url = message.get("SubscribeURL")
        hosts = self.config.cert_hosts or default_hosts(message["TopicArn"])
        if not isinstance(url, str) or not url_allowed(url, hosts):
            raise _Refused(403, "subscribe_url_not_allowed", str(url)[:200])
        assert self.certs is not None
        try:
            async with self.certs.session().get(url, allow_redirects=False) as resp:
                status = resp.status
                await resp.content.read(64 * 1024)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.error("sns_http.confirmation_failed", extra={**extra, "error": repr(exc)})
            return web.json_response({"message": "confirmation failed"}, status=502)
        if status != 200:
            self.log.error("sns_http.confirmation_failed", extra={**extra, "status": status})
            return web.json_response({"message": "confirmation failed"}, status=502)
        self.log.info("sns_http.subscription_confirmed", extra=extra)
        return web.Response(status=200)

    async def _enqueue(self, request: web.BaseRequest, message: dict[str, Any]) -> web.Response:
        cfg = self.config
        if self._stopping or len(self._pending) >= cfg.queue_size:
            raise _Refused(503, "queue_full" if not self._stopping else "stopping")
        sub = request.headers.get("x-amz-sns-subscription-arn", "")
        event = lambda_event(message, sub)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.push(
            Record(
                payload=event,
                item_id=str(message["MessageId"]),
                size=len(orjson.dumps(event)),
                created_at=self.ctx.clock.time(),
                handle=Pending(future),
            )
        )
        done, _ = await asyncio.wait({future}, timeout=cfg.accept_timeout_s)
        if done and future.result():
            return web.Response(status=200)
        if not done:
            future.cancel()
        raise _Refused(503, "not_queued_in_time")
