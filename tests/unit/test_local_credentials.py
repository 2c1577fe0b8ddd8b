"""Credentials a local function gets when the daemon has no aiobotocore."""

from __future__ import annotations

import logging

import pytest

from triggerd.functions.backends import local_credentials
from triggerd.functions.backends.local_credentials import CredentialSource
from triggerd.types import SystemClock


def source(environ: dict[str, str]) -> CredentialSource:
    return CredentialSource(
        function="f",
        region="us-east-1",
        clock=SystemClock(),
        log=logging.getLogger("triggerd.test"),
        timeout_s=3,
        environ=environ,
    )


async def test_without_aiobotocore_a_named_profile_is_a_warning_not_silence(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(local_credentials, "_aiobotocore_session", lambda: None)
    await source({"AWS_PROFILE": "prod"}).start()
    warned = [r for r in caplog.records if r.getMessage() == "backend.credentials_unresolved"]
    assert len(warned) == 1 and "triggerd-daemon[aws]" in warned[0].__dict__["reason"]


async def test_without_aiobotocore_plain_keys_pass_on_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(local_credentials, "_aiobotocore_session", lambda: None)
    creds = source({"AWS_PROFILE": "p", "AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s"})
    await creds.start()
    assert "backend.credentials_unresolved" not in caplog.text
    assert creds.env()["AWS_ACCESS_KEY_ID"] == "AKIA1"
