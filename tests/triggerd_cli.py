"""`python -m triggerd` in a subprocess, as an operator runs it, for the command line's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def triggerd_cli(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`triggerd ARGS` in `cwd` with this environment plus `env`, nothing on its standard input
    (not a terminal either), and its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "triggerd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
