"""The AWS CLI (pip awscli, in the dev extra) run as its users run it against a daemon's control
listener: in its own process, with only the given keys (no profile, config or credentials
file of the machine's) and one attempt. Imported by the control listener and EventBridge
tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def aws_cli() -> str:
    """The `aws` beside this interpreter or on PATH; the test is skipped without one."""
    found = Path(sys.executable).with_name("aws")
    if found.exists():
        return str(found)
    path = shutil.which("aws")
    if path is None:
        pytest.skip("the AWS CLI is not installed (pip install awscli, in the dev extra)")
    return path


def cli_env(keys: tuple[str, str], tmp: Path) -> dict[str, str]:
    """The variables that make the CLI sign with `keys` in us-east-1 and nothing else (its
    config and credentials files are names in `tmp` that do not exist)."""
    return {
        "AWS_ACCESS_KEY_ID": keys[0],
        "AWS_SECRET_ACCESS_KEY": keys[1],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials"),
        "AWS_MAX_ATTEMPTS": "1",
    }


async def run_aws_cli(
    endpoint: str, keys: tuple[str, str], tmp: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`aws --endpoint-url ENDPOINT ARGS...`, off the event loop, with its output as text."""
    env = {**os.environ, **cli_env(keys, tmp)}
    env.pop("AWS_PROFILE", None)
    argv = [aws_cli(), "--endpoint-url", endpoint, *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60
    )
