"""The SNS Query API on POST / of the control listener (`triggerd.fanout.sns` does the work):
authentication as the Invoke API does it (SigV4 headers before the body, the signature once it
is read, then the key's policy on the action and the topic's ARN), the form body read with a
cap, and every answer in SNS's XML, errors included, so boto3 and the AWS CLI raise the
named error."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from triggerd.config.model import DaemonSettings
from triggerd.fanout.sns.service import ACTIONS, SnsService
from triggerd.fanout.sns.wire import SnsError, error_document, parse_form, response_document
from triggerd.http.body import BodyTooLarge, read_body
from triggerd.http.refusals import mark_refused
from triggerd.http.sigv4 import AuthError, SigV4Verifier, payload_sha256, signed_request
from triggerd.state.sqlite import StateStoreError
from triggerd.types import HttpHandler

__all__ = ["MAX_QUERY_BODY", "sns_query_handler"]

#: A 256 KB message (or batch), percent-encoded (up to 3 bytes a byte), and the other fields.
MAX_QUERY_BODY = 3 * 262_144 + 64 * 1024
_XML = "text/xml"

log = logging.getLogger("triggerd.sns")


def sns_query_handler(service: SnsService, settings: DaemonSettings) -> HttpHandler:
    auth = (
        SigV4Verifier(
            settings.access_keys,
            region=settings.region,
            service="sns",
            account_id=settings.account_id,
        )
        if settings.access_keys
        else None
    )

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        rid = str(uuid.uuid4())
        try:
            action, result = await _handle(request, service, auth)
        except AuthError as exc:
            mark_refused(request, exc.reason)
            return _error(SnsError(_query_auth_code(exc.code), exc.message, exc.status), rid)
        except SnsError as exc:
            if exc.status >= 500:
                log.error("sns.failed", extra={"request_id": rid, "error": exc.message})
            else:
                mark_refused(request, "sns_" + exc.code.lower())
            return _error(exc, rid)
        except StateStoreError as exc:
            log.error("sns.not_stored", extra={"request_id": rid, "error": str(exc)})
            return _error(
                SnsError("InternalError", "The request could not be stored", 500, sender=False),
                rid,
            )
        return web.Response(
            body=response_document(action, result, rid),
            content_type=_XML,
            headers={"x-amzn-RequestId": rid},
        )

    return handle


async def _handle(
    request: web.BaseRequest, service: SnsService, auth: SigV4Verifier | None
) -> tuple[str, dict[str, object] | None]:
    signed = signed_request(request) if auth is not None else None
    credential = auth.check_headers(signed) if auth is not None and signed else None
    try:
        body = await read_body(request, MAX_QUERY_BODY)
    except BodyTooLarge:
        raise SnsError(
            "InvalidParameter",
            f"Invalid parameter: the request is larger than {MAX_QUERY_BODY} bytes",
            413,
        ) from None
    principal = None
    if auth is not None and signed is not None:
        principal = auth.verify_hashed(signed, await payload_sha256(body), credential)
    form = parse_form(body)
    action = form.get("Action", "")
    if action not in ACTIONS:
        raise SnsError(
            "InvalidAction", f"The action {action[:60]!r} is not valid for this endpoint."
        )
    if auth is not None and principal is not None:
        topic = service.topic_arn_of(form, action)
        if topic is None and action == "Unsubscribe":
            topic = form.get("SubscriptionArn", "").rpartition(":")[0]
        resource = topic or f"arn:aws:sns:{service.region}:{service.account_id}:*"
        auth.authorize(principal, ACTIONS[action], resource)
    return action, await service.call(action, form)


#: The JSON protocol's authentication codes (the Invoke API's, EventBridge's) as SNS's Query
#: protocol names them: botocore raises the ClientError with this code.
_QUERY_AUTH_CODES = {
    "AccessDeniedException": "AuthorizationError",
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "UnrecognizedClientException": "InvalidClientTokenId",
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
}


def _query_auth_code(code: str) -> str:
    return _QUERY_AUTH_CODES.get(code, code)


def _error(error: SnsError, rid: str) -> web.Response:
    return web.Response(
        status=error.status,
        body=error_document(error, rid),
        content_type=_XML,
        headers={"x-amzn-RequestId": rid},
    )
