"""Commands that only read the config import no connector, backend or HTTP library: each
costs start-up time (aiohttp alone about 80 ms) that `validate` and `generate-event` do
not need. Checked in a fresh interpreter, where sys.modules tells."""

from __future__ import annotations

import asyncio
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


#: What each command must not import beyond HEAVY, each a measured part of its start-up:
#: `generate-event` prints a sample (no event loop, config model, pydantic, YAML or state
#: store: the source package's own `sample_event`, not its plugin; no importlib.metadata:
#: triggerd's own sources are found without the installed entry points);
#: `validate` reads a config whose extras are installed (no `packaging`: requirements are
#: parsed only when one is missing; no `email.parser`: triggerd's requirement lines are
#: picked from its METADATA, not parsed with the README), checks functions on triggerd's own
#: Python without an event loop (no asyncio, hence no ssl), prints no table (rich) and asks
#: no daemon; `status` (a SQLite store, no source with a status line: no event loop either)
#: asks the daemon with the standard library's client (aiohttp is in HEAVY) and prints its
#: table, piped, without rich (`output.plain_table`). Neither builds the models of config
#: sections the example does not have (`[sns]`, `[[event_buses]]`), imports the state
#: store's modules (status reads a SQLite store with sqlite3 alone) or builds the records,
#: contexts and results a running daemon exchanges (`triggerd.runtime_types`). Nor does
#: `validate` import logging (no log line is written), difflib (a valid config needs no
#: "did you mean"), glob (the functions run on triggerd's own Python) or the PostgreSQL
#: store's schema module (to tell an SQLite URL from a PostgreSQL one); `generate-event`
#: prints with json, not orjson, and logs nothing; `status` on an SQLite store needs neither
#: logging nor the PostgreSQL store's schema module either.
NOT_USED_BY_THE_EXAMPLE = (
    "triggerd.runtime_types",
    "triggerd.config.sns",
    "triggerd.config.buses",
    "triggerd.state.base",
    "triggerd.state.sqlite",
    "triggerd.state.leases",
)
ALSO_NOT: dict[str, tuple[str, ...]] = {
    "generate-event": (
        "asyncio",
        "importlib.metadata",
        "email",
        "yaml",
        "sqlite3",
        "triggerd.config.model",
        "triggerd.config.load",
        "triggerd.models",
        "pydantic",
        "triggerd_directory._plugin",
        "triggerd.state.sqlite",
        "triggerd.telemetry.logs",
        "rich",
        "triggerd.runtime_types",
        "orjson",
        "logging",
    ),
    "validate": (
        "packaging",
        "asyncio",
        "ssl",
        "email.parser",
        "yaml",
        "rich",
        "triggerd.telemetry.logs",
        "triggerd.cli.status",
        "logging",
        "difflib",
        "glob",
        "triggerd.state.pgschema",
        *NOT_USED_BY_THE_EXAMPLE,
    ),
    "status": (
        "asyncio",
        "uvloop",
        "triggerd.telemetry.logs",
        "triggerd.http.invoke_api",
        "rich",
        "triggerd.cli.dlq",
        "logging",
        "triggerd.state.pgschema",
        *NOT_USED_BY_THE_EXAMPLE,
    ),
}


@pytest.mark.parametrize("command", ["validate", "generate-event", "status"])
def test_config_reading_commands_import_only_what_the_config_uses(
    command: str, tmp_path: Path
) -> None:
    # A copy of the example, listening where no daemon is.
    shutil.copytree(EXAMPLE.parent / "functions", tmp_path / "functions")
    config = tmp_path / "triggerd.toml"
    text = EXAMPLE.read_text().replace("127.0.0.1:9070", "127.0.0.1:7")
    config.write_text(text.replace("127.0.0.1:9071", "127.0.0.1:9"))
    args = {
        "validate": ["validate", str(config)],
        "generate-event": ["generate-event", "directory"],
        "status": ["status", "-c", str(config)],
    }[command]
    also = ALSO_NOT[command]
    code = f"""
        import contextlib, io, sys
        from triggerd.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
            io.StringIO()
        ), contextlib.suppress(SystemExit):
            main({args!r}, standalone_mode=False)
        print(sorted(m for m in {also!r} if m in sys.modules))
    """
    assert _watched_and_heavy(code) == ("[]", [])


_REPORT = textwrap.dedent(
    f"""
    import json, sys
    print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """
)


def _watched_and_heavy(code: str) -> tuple[str, list[str]]:
    """Run `code` in a new interpreter: the last line it printed (the watched modules it
    found imported), and the HEAVY modules imported by then."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + _REPORT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    *_, watched, heavy = out.stdout.strip().splitlines()
    return watched, json.loads(heavy)


def test_status_reports_an_unreachable_daemon_without_aiohttp(tmp_path: Path) -> None:
    """The standard library's client says where and why in one line, as aiohttp's did."""
    config = tmp_path / "triggerd.toml"
    config.write_text(
        EXAMPLE.read_text()
        .replace("127.0.0.1:9070", "127.0.0.1:7")
        .replace("127.0.0.1:9071", "127.0.0.1:9")
        .replace('state = "sqlite:///state/triggerd.db"', f'state = "sqlite:///{tmp_path}/s.db"')
    )
    out = subprocess.run(
        [sys.executable, "-m", "triggerd", "status", "-c", str(config), "-o", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    doc = json.loads(out.stdout)
    assert out.returncode == 9 and doc["daemon"]["status"] == "not reachable", out.stderr
    assert doc["daemon"]["error"] == "cannot connect to http://127.0.0.1:9: Connection refused"


def test_a_config_that_uses_a_connector_loads_it() -> None:
    """The other side of the same mechanism: the webhook's plugin is imported when a config
    has a webhook trigger; checking its route template needs no HTTP server (aiohttp)."""
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
        assert "triggerd_webhook._plugin" in sys.modules and "triggerd_kafka" not in sys.modules
        assert "triggerd.http.templates" in sys.modules
        assert "triggerd.http.routes" not in sys.modules
        """
    )
    assert "aiohttp" in HEAVY
    assert "aiohttp" not in loaded


def _example_copy(tmp_path: Path) -> Path:
    """The example in `tmp_path`, listening where no daemon is."""
    shutil.copytree(EXAMPLE.parent / "functions", tmp_path / "functions")
    (tmp_path / "inbox").mkdir()
    config = tmp_path / "triggerd.toml"
    text = EXAMPLE.read_text().replace("127.0.0.1:9070", "127.0.0.1:7")
    config.write_text(text.replace("127.0.0.1:9071", "127.0.0.1:9"))
    return config


def test_validate_parses_no_builtin_signature_from_text(tmp_path: Path) -> None:
    """Config models' list fields default through a Python function, not `list`: pydantic
    reads each factory's signature, and a builtin's makes `inspect` compile tokenize's
    regular expressions (a few ms of every command that loads a config)."""
    config = _example_copy(tmp_path)
    code = f"""
        import contextlib, io, tokenize
        from triggerd.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            main(["validate", {str(config)!r}], standalone_mode=False)
        assert "ok (3 functions, 3 triggers)" in out.getvalue(), out.getvalue()
        print(tokenize._compile.cache_info().currsize)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0"


def test_status_reads_a_sqlite_store_with_sqlite3_alone(tmp_path: Path) -> None:
    """The read-only reader needs no module of the store itself (their dataclasses are part
    of every status's start-up); the store is read all the same."""
    from triggerd.state.sqlite import SQLiteStateStore

    config = _example_copy(tmp_path)
    (tmp_path / "state").mkdir()

    async def create_store() -> None:
        store = SQLiteStateStore(str(tmp_path / "state" / "triggerd.db"))
        await store.open()
        await store.close()

    asyncio.run(create_store())
    code = f"""
        import contextlib, io, json, sys
        from triggerd.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            main(["status", "-c", {str(config)!r}, "-o", "json"], standalone_mode=False)
        print(json.dumps(json.loads(out.getvalue())["state_store_error"]))
        print(json.dumps(sorted(m for m in {NOT_USED_BY_THE_EXAMPLE!r} if m in sys.modules)))
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    *_, error, loaded = out.stdout.strip().splitlines()
    assert (json.loads(error), json.loads(loaded)) == (None, [])


def _sample_names() -> list[str]:
    from triggerd.config.plugins import Registry
    from triggerd.config.samples import sample_names

    return sample_names(Registry.discover())


#: What no `generate-event` imports, whatever the source: the sample is built by the source
#: package's own event code, without its config model, event loop or client library (HEAVY).
#: Stream sources' samples are built as their records, with `triggerd.runtime_types`.
NOT_FOR_ANY_SAMPLE = ("pydantic", "asyncio", "uvloop", "triggerd.config.model")


@pytest.mark.parametrize("source", _sample_names())
def test_generate_event_imports_no_config_model_loop_or_client_for_any_source(
    source: str,
) -> None:
    code = f"""
        import contextlib, io, sys
        from triggerd.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            main(["generate-event", {source!r}], standalone_mode=False)
        assert out.getvalue().lstrip().startswith("{{"), out.getvalue()
        print(sorted(m for m in {NOT_FOR_ANY_SAMPLE!r} if m in sys.modules))
    """
    assert _watched_and_heavy(code) == ("[]", [])
