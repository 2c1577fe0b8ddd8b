"""The control listener against a real daemon: webhooks stay on the public listener, the Invoke
API moved to the control listener, where (bound off loopback here, so required) AWS Signature
Version 4 with triggerd's own access keys decides who may do what. The clients are the real
ones: boto3, the AWS CLI, and botocore's signer for a request signed in the past."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import boto3
import pytest
import pytest_asyncio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.integration.aws_cli import cli_env, run_aws_cli
from tests.integration.invoke_daemon import local_fn
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.types import ExitCode, OperatorError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),
]

INVOKER = ("AKIAINVOKER", "invoker-secret-0123456789abcdef")
LISTER = ("AKIALISTER", "lister-secret-0123456789abcdef")
QUALIFIED = ("AKIAQUALIFIED", "qualified-secret-0123456789abcdef")
METRICS_TOKEN = "metrics-token-0123456789abcdef"
BEARER = "hook-token-0123456789"
NO_RETRIES = Config(retries={"max_attempts": 0, "mode": "standard"})
INVOKE_PATH = "/2015-03-31/functions/echo/invocations"


def config(tmp: Path) -> dict[str, Any]:
    return {
        "daemon": {
            "state": f"sqlite:///{tmp / 'state.db'}",
            "work_dir": str(tmp / "run"),
            "shutdown_timeout_s": 5,
            "listen": "127.0.0.1:0",
            # Off loopback: signatures are required (the keys below make it valid).
            "control_listen": "0.0.0.0:0",
            "access_keys": [
                {
                    "access_key_id": INVOKER[0],
                    "secret_access_key": INVOKER[1],
                    "name": "invoker",
                    "actions": ["lambda:InvokeFunction"],
                    "resources": ["echo", "orders-*"],
                },
                {
                    "access_key_id": LISTER[0],
                    "secret_access_key": LISTER[1],
                    "actions": ["lambda:ListFunctions"],
                },
                {
                    "access_key_id": QUALIFIED[0],
                    "secret_access_key": QUALIFIED[1],
                    "name": "qualified",
                    "actions": ["lambda:InvokeFunction"],
                    "resources": ["arn:aws:lambda:*:*:function:echo:*"],
                },
            ],
            "metrics_token": METRICS_TOKEN,
        },
        "functions": {"echo": local_fn(), "payroll": local_fn()},
        "triggers": [
            {
                "name": "signed-hook",
                "function": "echo",
                "source": {
                    "type": "webhook",
                    "path": "/hooks/signed",
                    "method": "POST",
                    "auth": {"type": "bearer", "token": BEARER},
                },
            }
        ],
    }


@dataclass
class Running:
    daemon: Daemon
    public: str
    control: str
    http: aiohttp.ClientSession
    tmp: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def r(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("control")
    registry = Registry.discover()
    cfg = validate_data(config(tmp), registry, base_dir=tmp)
    async with Daemon(cfg, registry).running() as daemon, aiohttp.ClientSession() as http:
        assert daemon.control_address is not None and daemon.listen_address is not None
        port = daemon.control_address.rpartition(":")[2]
        public = f"http://{daemon.listen_address}"
        yield Running(daemon, public, f"http://127.0.0.1:{port}", http, tmp)


def lam(r: Running, keys: tuple[str, str]) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=r.control,
        region_name="us-east-1",
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        config=NO_RETRIES,
    )


async def call(method: Any, **kw: Any) -> Any:
    """A blocking client call, off the loop the daemon runs in."""
    return await asyncio.to_thread(method, **kw)


async def refused(method: Any, **kw: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        await call(method, **kw)
    err = info.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"]["Message"]


async def fetch(r: Running, method: str, url: str, **kw: Any) -> tuple[int, Any, bytes]:
    async with r.http.request(method, url, **kw) as resp:
        return resp.status, resp.headers, await resp.read()


# ---- the two surfaces ----------------------------------------------------------------------


async def test_the_invoke_api_no_longer_bypasses_webhook_authentication(r: Running) -> None:
    # The bypass: 401 on the signed webhook, 200 on the same function through the
    # Invoke API on the same listener. Now the Invoke API is not on the public listener at all.
    assert (await fetch(r, "POST", r.public + "/hooks/signed", data=b"{}"))[0] == 401
    status, _, body = await fetch(r, "POST", r.public + INVOKE_PATH, data=b"{}")
    assert status == 404 and b"Not Found" in body
    for path in ("/metrics", "/readyz", "/statusz", "/2015-03-31/functions/"):
        assert (await fetch(r, "GET", r.public + path))[0] == 404, path
    # the webhook itself still works with its token
    status, _, _ = await fetch(
        r, "POST", r.public + "/hooks/signed", data=b"{}",
        headers={"Authorization": f"Bearer {BEARER}"},
    )  # fmt: skip
    assert status == 200


async def test_an_unsigned_call_to_the_exposed_control_listener_is_refused(r: Running) -> None:
    status, headers, body = await fetch(r, "POST", r.control + INVOKE_PATH, data=b"{}")
    assert status == 403
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(body)["message"] == "Missing Authentication Token"
    assert json.loads(body)["Type"] == "User"


async def test_health_is_on_both_listeners_and_metrics_only_on_the_control_one(
    r: Running,
) -> None:
    # the public one says how it is, not what runs
    status, _, body = await fetch(r, "GET", r.public + "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = await fetch(r, "GET", r.control + "/healthz")
    assert status == 200 and json.loads(body)["functions"] == ["echo", "payroll"]
    status, _, body = await fetch(r, "GET", r.control + "/metrics")
    assert status == 200 and b"triggerd_" in body
    assert (await fetch(r, "GET", r.control + "/readyz"))[0] == 200
    assert (await fetch(r, "GET", r.public + "/metrics"))[0] == 404
    assert (await fetch(r, "GET", r.public + "/readyz"))[0] == 404


# ---- boto3 ---------------------------------------------------------------------------------


async def test_boto3_with_a_right_key_invokes(r: Running) -> None:
    resp = await call(lam(r, INVOKER).invoke, FunctionName="echo", Payload=b'{"n": 1}')
    assert resp["StatusCode"] == 200
    assert json.loads(resp["Payload"].read())["event"] == {"n": 1}
    # the ARN form is the same resource
    arn = "arn:aws:lambda:us-east-1:123456789012:function:echo"
    assert (await call(lam(r, INVOKER).invoke, FunctionName=arn))["StatusCode"] == 200


async def test_boto3_with_a_wrong_secret_gets_invalid_signature(r: Running) -> None:
    status, code, message = await refused(
        lam(r, (INVOKER[0], "not-the-secret-0123456789")).invoke, FunctionName="echo"
    )
    assert (status, code) == (403, "InvalidSignatureException")
    assert message.startswith("The request signature we calculated does not match")


async def test_boto3_with_an_unknown_key_gets_unrecognized_client(r: Running) -> None:
    status, code, message = await refused(
        lam(r, ("AKIANOBODY", INVOKER[1])).invoke, FunctionName="echo"
    )
    assert (status, code) == (403, "UnrecognizedClientException")
    assert message == "The security token included in the request is invalid."


async def test_an_action_the_key_is_not_allowed_is_access_denied(r: Running) -> None:
    status, code, message = await refused(lam(r, LISTER).invoke, FunctionName="echo")
    assert (status, code) == (403, "AccessDeniedException")
    assert message == (
        "User: arn:aws:iam::123456789012:user/AKIALISTER is not authorized to perform: "
        "lambda:InvokeFunction on resource: arn:aws:lambda:us-east-1:123456789012:function:echo "
        "because no identity-based policy allows the lambda:InvokeFunction action"
    )
    status, code, _ = await refused(lam(r, INVOKER).list_functions)
    assert (status, code) == (403, "AccessDeniedException")
    listed = await call(lam(r, LISTER).list_functions)
    names = [f["FunctionName"] for f in listed["Functions"]]
    assert names == ["echo", "payroll"]


async def test_a_function_the_key_is_not_allowed_is_access_denied(r: Running) -> None:
    status, code, message = await refused(lam(r, INVOKER).invoke, FunctionName="payroll")
    assert (status, code) == (403, "AccessDeniedException")
    assert "user/invoker is not authorized" in message and "function:payroll" in message
    # Allowed names that do not exist are 404; names outside the policy do not say whether
    # they exist.
    status, code, _ = await refused(lam(r, INVOKER).invoke, FunctionName="orders-eu")
    assert (status, code) == (404, "ResourceNotFoundException")
    status, code, _ = await refused(lam(r, INVOKER).invoke, FunctionName="nonexistent")
    assert (status, code) == (403, "AccessDeniedException")


async def test_a_request_signed_more_than_15_minutes_ago_has_expired(r: Running) -> None:
    url = r.control + INVOKE_PATH
    signed_at = datetime.now(UTC) - timedelta(minutes=20)
    request = AWSRequest(method="POST", url=url, data=b"{}")
    with mock.patch(
        "botocore.auth.get_current_datetime", return_value=signed_at.replace(tzinfo=None)
    ):
        SigV4Auth(Credentials(*INVOKER), "lambda", "us-east-1").add_auth(request)
    status, headers, body = await fetch(
        r, "POST", url, data=b"{}", headers=dict(request.headers.items())
    )
    assert status == 403 and headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    stamp = signed_at.strftime("%Y%m%dT%H%M%SZ")
    assert json.loads(body)["message"].startswith(f"Signature expired: {stamp} is now earlier")
    # the same request signed now passes
    fresh = AWSRequest(method="POST", url=url, data=b"{}")
    SigV4Auth(Credentials(*INVOKER), "lambda", "us-east-1").add_auth(fresh)
    status, _, _ = await fetch(r, "POST", url, data=b"{}", headers=dict(fresh.headers.items()))
    assert status == 200


async def test_a_tampered_body_fails_the_signature(r: Running) -> None:
    url = r.control + INVOKE_PATH
    request = AWSRequest(method="POST", url=url, data=b'{"amount": 1}')
    SigV4Auth(Credentials(*INVOKER), "lambda", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    status, headers, _ = await fetch(r, "POST", url, data=b'{"amount": 9}', headers=headers)
    assert status == 403 and headers["x-amzn-ErrorType"] == "InvalidSignatureException"


# ---- the AWS CLI ---------------------------------------------------------------------------


async def run_cli(
    r: Running, keys: tuple[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return await run_aws_cli(r.control, keys, r.tmp, "lambda", *args)


async def test_the_aws_cli_with_a_right_key_invokes_and_lists(r: Running) -> None:
    out = r.tmp / "out.json"
    # AWS CLI v1 (the PyPI one) takes --payload as it is; v2 needs --cli-binary-format too.
    done = await run_cli(
        r, INVOKER, "invoke", "--function-name", "echo", "--payload", '{"cli": true}', str(out)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["StatusCode"] == 200
    assert json.loads(out.read_text())["event"] == {"cli": True}
    listed = await run_cli(r, LISTER, "list-functions")
    assert listed.returncode == 0, listed.stderr
    assert [f["FunctionName"] for f in json.loads(listed.stdout)["Functions"]] == [
        "echo",
        "payroll",
    ]


@pytest.mark.parametrize(
    ("keys", "code"),
    [
        ((INVOKER[0], "not-the-secret-0123456789"), "InvalidSignatureException"),
        (("AKIANOBODY", INVOKER[1]), "UnrecognizedClientException"),
        (LISTER, "AccessDeniedException"),
    ],
)
async def test_the_aws_cli_is_refused_with_awss_errors(
    r: Running, keys: tuple[str, str], code: str
) -> None:
    out = r.tmp / "refused.json"
    done = await run_cli(r, keys, "invoke", "--function-name", "echo", str(out))
    assert done.returncode != 0
    assert f"({code})" in done.stderr, done.stderr
    assert keys[1] not in done.stderr


# ---- control endpoints on the public listener, when asked ----------------------------------


async def test_control_on_public_serves_the_invoke_api_there_still_signed(
    tmp_path: Path, r: Running
) -> None:
    data = config(tmp_path)
    data["daemon"].update(control_listen="", control_on_public=True)
    del data["daemon"]["metrics_token"]  # loopback only: no peer needs it
    registry = Registry.discover()
    cfg = validate_data(data, registry, base_dir=tmp_path)
    async with Daemon(cfg, registry).running() as daemon:
        assert daemon.control_address is None
        url = f"http://{daemon.listen_address}{INVOKE_PATH}"
        status, headers, _ = await fetch(r, "POST", url, data=b"{}")
        assert status == 403
        assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        request = AWSRequest(method="POST", url=url, data=b"{}")
        SigV4Auth(Credentials(*INVOKER), "lambda", "us-east-1").add_auth(request)
        status, _, body = await fetch(r, "POST", url, data=b"{}", headers=dict(request.headers))
        assert status == 200 and json.loads(body)["event"] == {}


async def test_a_control_port_in_use_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = config(tmp_path)
        data["daemon"].update(control_listen=f"127.0.0.1:{port}", access_keys=[])
        del data["daemon"]["metrics_token"]
        data["triggers"] = []
        registry = Registry.discover()
        daemon = Daemon(validate_data(data, registry, base_dir=tmp_path), registry)
        with pytest.raises(OperatorError) as info:
            async with daemon.running():
                pass
    assert str(info.value) == (
        f"cannot listen on 127.0.0.1:{port}: the address is already in use (another "
        "triggerd, or another program); change [daemon] control_listen"
    )
    assert info.value.exit_code == ExitCode.LISTEN_FAILED


async def test_list_functions_pages_with_max_items_and_marker(r: Running) -> None:
    client = lam(r, LISTER)
    first = await call(client.list_functions, MaxItems=1)
    assert [f["FunctionName"] for f in first["Functions"]] == ["echo"]
    assert first["NextMarker"] == "echo"
    echo = first["Functions"][0]
    assert echo["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:echo"
    assert (echo["Handler"], echo["Timeout"], echo["Version"]) == ("app.handler", 5, "$LATEST")
    second = await call(client.list_functions, MaxItems=1, Marker=first["NextMarker"])
    assert [f["FunctionName"] for f in second["Functions"]] == ["payroll"]
    assert "NextMarker" not in second
    pages = client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1})
    names = await asyncio.to_thread(lambda: [f["FunctionName"] for f in pages.search("Functions")])
    assert names == ["echo", "payroll"]


# ---- refusals counted and logged -----------------------------------------------------------


async def refused_count(r: Running, reason: str) -> float:
    _, _, body = await fetch(r, "GET", r.control + "/metrics")
    pattern = (
        rb'triggerd_http_refused_total\{listener="control",reason="'
        + reason.encode()
        + rb'"\} (\S+)'
    )
    match = re.search(pattern, body)
    return float(match.group(1)) if match else 0.0


async def test_sigv4_refusals_are_counted_by_reason_and_logged_with_the_remote_address(
    r: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggerd.http")
    reasons = ("sigv4_invalid_signature", "sigv4_access_denied", "sigv4_incomplete_signature")
    before = {reason: await refused_count(r, reason) for reason in reasons}
    await refused(lam(r, (INVOKER[0], "not-the-secret-0123456789")).invoke, FunctionName="echo")
    await refused(lam(r, LISTER).invoke, FunctionName="echo")
    await refused(lam(r, INVOKER).list_functions)  # ListFunctions counts its refusals too
    malformed = {"Authorization": "AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host, Signature=0"}
    status, headers, _ = await fetch(
        r, "POST", r.control + INVOKE_PATH, data=b"{}", headers=malformed
    )
    assert status == 403 and headers["x-amzn-ErrorType"] == "IncompleteSignatureException"
    after = {reason: await refused_count(r, reason) for reason in reasons}
    assert after["sigv4_invalid_signature"] == before["sigv4_invalid_signature"] + 1
    assert after["sigv4_access_denied"] == before["sigv4_access_denied"] + 2
    assert after["sigv4_incomplete_signature"] == before["sigv4_incomplete_signature"] + 1
    [line] = [
        rec
        for rec in caplog.records
        if rec.getMessage() == "http.refused"
        and getattr(rec, "reason", None) == "sigv4_incomplete_signature"
    ]
    assert line.levelno == logging.INFO
    assert (line.listener, line.remote) == ("control", "127.0.0.1")  # type: ignore[attr-defined]
    assert line.route == INVOKE_PATH.replace("echo", "{function}")  # type: ignore[attr-defined]


# ---- policies on qualified ARNs ------------------------------------------------------------


async def test_a_policy_on_qualified_arns_allows_qualified_calls_only(r: Running) -> None:
    client = lam(r, QUALIFIED)
    assert (await call(client.invoke, FunctionName="echo", Qualifier="$LATEST"))[
        "StatusCode"
    ] == 200
    assert (await call(client.invoke, FunctionName="echo:$LATEST"))["StatusCode"] == 200
    status, code, message = await refused(client.invoke, FunctionName="echo")
    assert (status, code) == (403, "AccessDeniedException")
    assert "on resource: arn:aws:lambda:us-east-1:123456789012:function:echo because" in message


async def test_a_policy_on_a_plain_name_allows_unqualified_calls_only_as_in_aws(
    r: Running,
) -> None:
    client = lam(r, INVOKER)  # resources: echo, orders-*
    assert (await call(client.invoke, FunctionName="echo"))["StatusCode"] == 200
    status, code, message = await refused(client.invoke, FunctionName="echo", Qualifier="$LATEST")
    assert (status, code) == (403, "AccessDeniedException")
    assert "on resource: arn:aws:lambda:us-east-1:123456789012:function:echo:$LATEST " in message
    # a wildcard spans the colon, as IAM's does: orders-* covers orders-eu:prod
    status, code, _ = await refused(client.invoke, FunctionName="orders-eu:prod")
    assert (status, code) == (404, "ResourceNotFoundException")


# ---- the plain endpoints of an exposed control listener ------------------------------------


def interface_address() -> str:
    """An address of this machine that is not loopback (a peer connecting from it is not
    on loopback), or skip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            pytest.skip("this machine has no route off loopback")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("this machine has no address off loopback")
    return address


async def test_peers_off_loopback_need_the_metrics_token_for_what_the_policy_hides(
    r: Running,
) -> None:
    port = r.control.rpartition(":")[2]
    remote = f"http://{interface_address()}:{port}"
    # /healthz tells the status only; the rest needs the token
    status, _, body = await fetch(r, "GET", remote + "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    missing = await refused_count(r, "metrics_token_missing")
    for path in ("/metrics", "/readyz", "/statusz"):
        status, headers, body = await fetch(r, "GET", remote + path)
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="triggerd"', path
        assert b"echo" not in body and b"signed-hook" not in body
        wrong = {"Authorization": "Bearer not-the-token-0123456789"}
        assert (await fetch(r, "GET", remote + path, headers=wrong))[0] == 403, path
        right = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        assert (await fetch(r, "GET", remote + path, headers=right))[0] == 200, path
    assert await refused_count(r, "metrics_token_missing") == missing + 3
    right = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    status, _, body = await fetch(r, "GET", remote + "/healthz", headers=right)
    assert json.loads(body)["functions"] == ["echo", "payroll"]


async def test_status_reaches_an_exposed_control_listener_with_the_token(r: Running) -> None:
    from triggerd.cli.status import ask_daemon

    port = r.control.rpartition(":")[2]
    data = config(r.tmp)
    data["daemon"]["control_listen"] = f"{interface_address()}:{port}"
    cfg = validate_data(data, Registry.discover(), base_dir=r.tmp)
    view = await ask_daemon(cfg)
    assert view.reachable and view.status == "ready", view.error
    assert set(view.triggers) == {"signed-hook"}
    data["daemon"]["control_listen"] = f"127.0.0.1:{port}"
    del data["daemon"]["metrics_token"]  # from loopback no token is needed
    view = await ask_daemon(validate_data(data, Registry.discover(), base_dir=r.tmp))
    assert view.reachable and view.status == "ready", view.error


# ---- AWS-shaped answers to what triggerd does not serve ------------------------------------


async def test_an_operation_triggerd_does_not_serve_is_an_unknown_operation(r: Running) -> None:
    status, code, message = await refused(lam(r, INVOKER).get_function, FunctionName="echo")
    assert (status, code) == (400, "UnknownOperationException")
    assert "Invoke and ListFunctions" in message
    status, headers, body = await fetch(r, "GET", r.control + INVOKE_PATH)  # another method
    assert status == 400 and headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert json.loads(body)["Type"] == "User"


async def test_the_signature_is_checked_before_the_parameters(r: Running) -> None:
    url = r.control + INVOKE_PATH
    request = AWSRequest(
        method="POST", url=url, data=b"{}", headers={"X-Amz-Invocation-Type": "Bogus"}
    )
    SigV4Auth(Credentials(INVOKER[0], "not-the-secret-0123456789"), "lambda", "us-east-1").add_auth(
        request
    )
    status, headers, _ = await fetch(r, "POST", url, data=b"{}", headers=dict(request.headers))
    assert status == 403 and headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    # signed right, the parameter is what is wrong
    request = AWSRequest(
        method="POST", url=url, data=b"{}", headers={"X-Amz-Invocation-Type": "Bogus"}
    )
    SigV4Auth(Credentials(*INVOKER), "lambda", "us-east-1").add_auth(request)
    status, headers, _ = await fetch(r, "POST", url, data=b"{}", headers=dict(request.headers))
    assert status == 400 and headers["x-amzn-ErrorType"] == "InvalidParameterValueException"


async def test_temporary_credentials_are_an_unrecognized_client(r: Running) -> None:
    client = boto3.client(
        "lambda",
        endpoint_url=r.control,
        region_name="us-east-1",
        aws_access_key_id=INVOKER[0],
        aws_secret_access_key=INVOKER[1],
        aws_session_token="FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
        config=NO_RETRIES,
    )
    status, code, message = await refused(client.invoke, FunctionName="echo")
    assert (status, code) == (403, "UnrecognizedClientException")
    assert message == "The security token included in the request is invalid."


async def test_an_unsigned_payload_is_accepted_as_sigv4_defines_it(r: Running) -> None:
    url = r.control + INVOKE_PATH
    request = AWSRequest(
        method="POST",
        url=url,
        data=b'{"unsigned": 1}',
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    SigV4Auth(Credentials(*INVOKER), "lambda", "us-east-1").add_auth(request)
    headers = dict(request.headers)
    status, _, body = await fetch(r, "POST", url, data=b'{"unsigned": 1}', headers=headers)
    assert status == 200 and json.loads(body)["event"] == {"unsigned": 1}


async def test_the_aws_cli_signing_20_minutes_ago_gets_signature_expired(r: Running) -> None:
    from awscli.clidriver import create_clidriver

    signed_at = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=20)
    env = cli_env(INVOKER, r.tmp)
    argv = ["--endpoint-url", r.control, "lambda", "invoke", "--function-name", "echo"]
    argv.append(str(r.tmp / "expired.json"))
    errors = io.StringIO()

    def run() -> int:
        # The CLI in this process, its signer's clock 20 minutes behind.
        with (
            mock.patch.dict(os.environ, env),
            mock.patch("botocore.auth.get_current_datetime", return_value=signed_at),
            contextlib.redirect_stderr(errors),
        ):
            return int(create_clidriver().main(argv))

    assert await asyncio.to_thread(run) != 0
    stamp = signed_at.strftime("%Y%m%dT%H%M%SZ")
    assert "(InvalidSignatureException)" in errors.getvalue(), errors.getvalue()
    assert f"Signature expired: {stamp} is now earlier than" in errors.getvalue()
