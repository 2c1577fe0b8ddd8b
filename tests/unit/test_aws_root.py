"""POST / dispatch between the AWS APIs that share the root path (triggerd.http.aws_root)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from triggerd.http.aws_root import RootApis
from triggerd.http.refusals import REFUSAL_KEY


def _handler(name: str):  # type: ignore[no-untyped-def]
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text=name)

    return handle


def _post(headers: dict[str, str]) -> web.Request:
    return make_mocked_request("POST", "/", headers=headers)


async def test_json_protocol_goes_to_the_target_prefix() -> None:
    apis = RootApis()
    apis.add_target("AWSEvents", _handler("events"))
    apis.set_query(_handler("sns"))
    response = await apis.dispatch(_post({"X-Amz-Target": "AWSEvents.PutEvents"}))
    assert isinstance(response, web.Response)
    assert response.text == "events"


async def test_form_body_goes_to_the_query_protocol() -> None:
    apis = RootApis()
    apis.add_target("AWSEvents", _handler("events"))
    apis.set_query(_handler("sns"))
    request = _post({"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    response = await apis.dispatch(request)
    assert isinstance(response, web.Response)
    assert response.text == "sns"


async def test_unserved_target_is_aws_unknown_operation() -> None:
    apis = RootApis()
    apis.add_target("AWSEvents", _handler("events"))
    request = _post({"X-Amz-Target": "DynamoDB_20120810.GetItem"})
    response = await apis.dispatch(request)
    assert isinstance(response, web.Response)
    assert response.status == 400
    assert response.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert request[REFUSAL_KEY] == "unknown_operation"


async def test_nothing_served_refuses_a_form_post() -> None:
    apis = RootApis()
    assert not apis
    request = _post({"Content-Type": "application/x-www-form-urlencoded"})
    response = await apis.dispatch(request)
    assert response.status == 400


def test_a_prefix_is_served_once() -> None:
    apis = RootApis()
    apis.add_target("AWSEvents", _handler("a"))
    try:
        apis.add_target("AWSEvents", _handler("b"))
    except ValueError as exc:
        assert "served already" in str(exc)
    else:
        raise AssertionError("a second handler for the same prefix was accepted")
