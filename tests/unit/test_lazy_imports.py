"""Commands that only read the config import no connector, backend or HTTP library: each
costs start-up time (aiohttp alone about 80 ms) that `validate` and `generate-event` do
not need. Checked in a fresh interpreter, where sys.modules tells."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "triggerd.toml"

#: Client libraries of connectors and backends, the HTTP stack, the worker machinery.
HEAVY = (
    "aiohttp",
    "aiobotocore",
    "botocore",
    "aiokafka",
    "asyncpg",
    "aio_pika",
    "aiormq",
    "watchfiles",
    "httptools",
    "yarl",
    "prometheus_client",
    "triggerd.functions.backends.local",
    "triggerd.functions.backends.local_worker",
    "triggerd.functions.runtime_api",
    "triggerd.daemon.app",
)


def imported_after(code: str) -> list[str]:
    """The HEAVY modules in sys.modules after running `code` in a new interpreter."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_cli_imports_no_connector_backend_or_http_library() -> None:
    assert imported_after("import triggerd.cli.main") == []


# `status` is not here: it asks the daemon's control listener with aiohttp (TLS included).
@pytest.mark.parametrize("command", ["validate", "generate-event"])
def test_config_reading_commands_import_only_what_the_config_uses(
    command: str, tmp_path: Path
) -> None:
    # A copy of the example, listening where no daemon is.
    shutil.copytree(EXAMPLE.parent / "functions", tmp_path / "functions")
    config = tmp_path / "triggerd.toml"
    config.write_text(EXAMPLE.read_text().replace("127.0.0.1:9070", "127.0.0.1:9"))
    args = {
        "validate": ["validate", str(config)],
        "generate-event": ["generate-event", "directory"],
    }[command]
    code = f"""
        import contextlib, io
        from triggerd.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main({args!r}, standalone_mode=False)
    """
    assert imported_after(code) == []


def test_a_config_that_uses_a_connector_loads_it() -> None:
    """The other side of the same mechanism: the webhook's plugin (and its HTTP routes) is
    imported when a config has a webhook trigger."""
    loaded = imported_after(
        """
        from pathlib import Path
        from triggerd.config.load import validate_data
        from triggerd.config.plugins import Registry
        validate_data(
            {
                "functions": {"f": {"handler": "app.handler", "code": "."}},
                "triggers": [
                    {"function": "f", "source": {"type": "webhook", "path": "/hook"}}
                ],
            },
            Registry.discover(),
            Path("."),
        )
        import sys
        assert "triggerd_webhook" in sys.modules and "triggerd_kafka" not in sys.modules
        """
    )
    assert "aiohttp" in loaded  # the webhook's route table is aiohttp's
