"""The execution environment of Python functions on the local backend, as Lambda builds it:
the runtime's own interpreter (real 3.10 / 3.12 / 3.13 interpreters), isolation from triggerd's
packages with a runtime-provided boto3, .zip code, layers, requirements installed from a local
wheel, and credentials from the standard chain or an assumed role (moto's STS)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from triggerd.functions.backends.local import LocalBackend, LocalFunctionConfig
from triggerd.functions.backends.local_python import InterpreterFinder
from triggerd.telemetry.logs import AWS_SDK_LOGGERS, cap_aws_sdk_logs
from triggerd.types import BackendContext, ConfigError, Outcome, SystemClock

pytestmark = pytest.mark.integration

PROBE = textwrap.dedent(
    """
    import importlib, os, sys

    def handler(event, context):
        found = {}
        for name in event.get("imports", []):
            try:
                importlib.import_module(name)
                found[name] = True
            except ImportError:
                found[name] = False
        env = {k: os.environ.get(k) for k in event.get("env", [])}
        import builtins as b
        builtins = [n for n in ("exit", "quit", "help") if callable(getattr(b, n, None))]
        return {"version": list(sys.version_info[:2]), "imports": found, "env": env,
                "executable": sys.executable, "path": sys.path, "builtins": builtins}
    """
)

Factory = Callable[..., Awaitable[LocalBackend]]


def write_function(directory: Path, source: str = PROBE, name: str = "app.py") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(source)
    return directory


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[Factory]:
    created: list[LocalBackend] = []

    async def make(code: Path | str, *, start: bool = True, **cfg: Any) -> LocalBackend:
        cfg.setdefault("handler", "app.handler")
        config = LocalFunctionConfig(code=str(code), **cfg)
        ctx = BackendContext(
            "fn", SystemClock(), logging.getLogger("test"), work_dir=str(tmp_path / "work")
        )
        backend = LocalBackend(config, ctx)
        created.append(backend)
        if start:
            await backend.start()
        return backend

    yield make
    for backend in created:
        await backend.stop()


async def call(backend: LocalBackend, event: dict[str, Any]) -> Any:
    result = await backend.invoke(orjson.dumps(event))
    assert result.outcome is Outcome.OK, result.payload
    return orjson.loads(result.payload)


async def interpreter_or_skip(version: str) -> str:
    try:
        found = await InterpreterFinder().find("python" + version)
    except ConfigError as e:
        pytest.skip(f"no Python {version} on this machine: {e}")
    return found.path


# --------------------------------------------------------------------------------------------
# Runtime versions and isolation


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
async def test_runtime_runs_its_own_interpreter_isolated_with_boto3(
    make_backend: Factory, tmp_path: Path, version: str
) -> None:
    await interpreter_or_skip(version)
    backend = await make_backend(write_function(tmp_path / "fn"), runtime="python" + version)
    out = await call(
        backend,
        {
            "imports": ["triggerd", "aiohttp", "pydantic", "orjson", "boto3", "botocore"],
            "env": ["AWS_EXECUTION_ENV"],
        },
    )
    assert out["version"] == [int(x) for x in version.split(".")]
    assert out["env"]["AWS_EXECUTION_ENV"] == f"AWS_Lambda_python{version}"
    assert out["imports"] == {
        "triggerd": False,
        "aiohttp": False,
        "pydantic": False,
        "orjson": False,
        "boto3": True,
        "botocore": True,
    }
    assert out["path"][0] == str(tmp_path / "fn")  # LAMBDA_TASK_ROOT first, as on Lambda
    assert not any(sys.prefix in p for p in out["path"])  # nothing of the daemon's venv
    assert out["builtins"] == ["exit", "quit", "help"]  # what `site` adds, as on Lambda


async def test_interpreter_setting_is_used_and_checked(
    make_backend: Factory, tmp_path: Path
) -> None:
    path = await interpreter_or_skip("3.12")
    code = write_function(tmp_path / "fn")
    backend = await make_backend(code, runtime="python3.12", interpreter=path)
    assert (await call(backend, {}))["version"] == [3, 12]
    with pytest.raises(ConfigError, match=r"interpreter: .* is Python 3\.12, runtime python3\.11"):
        await make_backend(code, runtime="python3.11", interpreter=path)
    with pytest.raises(ConfigError, match="does not run"):
        await make_backend(code, interpreter=str(tmp_path / "nope"))


def test_validate_names_a_runtime_whose_interpreter_is_missing(tmp_path: Path) -> None:
    write_function(tmp_path / "fn")
    config = tmp_path / "t.toml"
    config.write_text(
        '[functions.f]\nruntime = "python3.12"\nhandler = "app.handler"\ncode = "fn"\n'
        'interpreter = "/no/such/python3.12"\n'
    )
    triggerd = str(Path(sys.executable).with_name("triggerd"))
    done = subprocess.run(
        [triggerd, "validate", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "functions.f.interpreter: /no/such/python3.12 does not run" in done.stderr
    assert "Traceback" not in done.stderr


async def test_missing_interpreter_error_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PYENV_ROOT", raising=False)
    monkeypatch.setattr(
        "triggerd.functions.backends.local_python.SEARCH_DIRS", (str(tmp_path / "none"),)
    )
    with pytest.raises(ConfigError) as info:
        await InterpreterFinder().find("python3.13", where="functions.f.")
    assert info.value.problems[0].startswith(
        "functions.f.runtime: python3.13 needs a Python 3.13 interpreter"
    )
    assert 'interpreter = "/path/to/python3.13"' in info.value.problems[0]


# --------------------------------------------------------------------------------------------
# Code packages, layers, requirements


def make_zip(path: Path, files: dict[str, str], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            zf.writestr(info, text)
    return path


def make_wheel(directory: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel, as `pip wheel` would build it."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = [f"{n},," for n in [*files, f"{dist}/RECORD"]]
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    return make_zip(directory / f"{name}-{version}-py3-none-any.whl", files)


LAYERED = textwrap.dedent(
    """
    import os, subprocess
    import shared, from_site, mylib

    def handler(event, context):
        tool = subprocess.run(["layer-tool"], capture_output=True, text=True).stdout.strip()
        return {"shared": shared.WHO, "site": from_site.WHO, "mylib": mylib.VERSION,
                "tool": tool, "ld": os.environ["LD_LIBRARY_PATH"].split(":")[-1]}
    """
)


async def test_zip_code_layers_in_order_and_requirements_from_a_local_wheel(
    make_backend: Factory, tmp_path: Path
) -> None:
    code = make_zip(tmp_path / "code.zip", {"app.py": LAYERED})
    layer1 = tmp_path / "layer1"
    (layer1 / "python").mkdir(parents=True)
    (layer1 / "python" / "shared.py").write_text("WHO = 'layer1'\n")
    (layer1 / "bin").mkdir()
    (layer1 / "bin" / "layer-tool").write_text("#!/bin/sh\necho from-layer1\n")
    (layer1 / "bin" / "layer-tool").chmod(0o755)
    site = f"python/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
    layer2 = make_zip(
        tmp_path / "layer2.zip",
        {"python/shared.py": "WHO = 'layer2'\n", f"{site}/from_site.py": "WHO = 'site'\n"},
    )
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "mylib", "1.0", "VERSION = '1.0'\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("--no-index\n--find-links wheels\nmylib==1.0\n")
    lines: list[str] = []
    backend = await make_backend(
        code, layers=[str(layer1), str(layer2)], requirements=str(requirements), start=False
    )
    backend._progress = lines.append  # type: ignore[method-assign]
    await backend.start()
    assert any("installing" in line and "requirements.txt" in line for line in lines)
    out = await call(backend, {})
    assert out == {
        "shared": "layer2",  # later layers overwrite earlier files
        "site": "site",
        "mylib": "1.0",
        "tool": "from-layer1",
        "ld": os.path.join(str(backend.opt_dir), "lib"),
    }
    assert backend.code_dir is not None and backend.code_dir.startswith(str(tmp_path / "work"))
    assert backend.opt_dir is not None and (Path(backend.opt_dir) / "bin" / "layer-tool").is_file()

    # Unchanged: nothing is installed again. A changed zip is extracted again.
    again = await make_backend(
        code, layers=[str(layer1), str(layer2)], requirements=str(requirements), start=False
    )
    quiet: list[str] = []
    again._progress = quiet.append  # type: ignore[method-assign]
    await again.start()
    assert quiet == [] and again.prepared == backend.prepared
    make_zip(code, {"app.py": "def handler(e, c):\n    return 'v2'\n"})
    changed = await make_backend(code, requirements="")
    assert changed.code_dir != backend.code_dir
    assert orjson.loads((await changed.invoke(b"{}")).payload) == "v2"


async def test_a_zip_s_own_requirements_txt_is_installed_by_default(
    make_backend: Factory, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "ziplib", "2.0", "VERSION = '2.0'\n")
    code = make_zip(
        tmp_path / "code.zip",
        {
            "app.py": "import ziplib\n\ndef handler(e, c):\n    return ziplib.VERSION\n",
            "requirements.txt": f"--no-index\n--find-links {wheels}\nziplib==2.0\n",
        },
    )
    backend = await make_backend(code)
    assert backend.unavailable is None
    assert orjson.loads((await backend.invoke(b"{}")).payload) == "2.0"


async def test_a_failed_install_leaves_the_function_unavailable_with_pip_s_reason(
    make_backend: Factory, tmp_path: Path
) -> None:
    code = write_function(tmp_path / "fn")
    (code / "requirements.txt").write_text("--no-index\nno-such-package-xyz==1.0\n")
    backend = await make_backend(code)
    assert backend.unavailable is not None and "no-such-package-xyz" in backend.unavailable
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.INVOKE_ERROR
    error = orjson.loads(result.payload)
    assert "no-such-package-xyz" in error["errorMessage"]
    work = tmp_path / "work"
    assert not [p for p in os.listdir(work) if p.startswith(("deps-", ".installing"))]


def test_zip_entries_outside_the_package_are_refused(tmp_path: Path) -> None:
    from triggerd.functions.backends.local_package import PackageError, prepare_code

    bad = make_zip(tmp_path / "bad.zip", {"../evil.py": "x = 1\n"})
    with pytest.raises(PackageError, match="outside the package"):
        prepare_code(str(bad), str(tmp_path / "work"))
    assert not (tmp_path / "evil.py").exists()


def test_build_command_installs_then_costs_nothing(tmp_path: Path) -> None:
    code = write_function(tmp_path / "fn")
    wheels = tmp_path / "fn" / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "mylib", "1.0", "VERSION = '1.0'\n")
    (code / "requirements.txt").write_text("--no-index\n--find-links wheels\nmylib==1.0\n")
    config = tmp_path / "t.toml"
    config.write_text(
        '[daemon]\nstate = "sqlite:///state/s.db"\n'
        '[functions.f]\nhandler = "app.handler"\ncode = "fn"\n'
    )
    triggerd = str(Path(sys.executable).with_name("triggerd"))
    first = subprocess.run([triggerd, "build", str(config)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "installed" in first.stdout and "f: ready" in first.stdout
    second = subprocess.run([triggerd, "build", str(config)], capture_output=True, text=True)
    assert second.returncode == 0 and "installing" not in second.stdout


# --------------------------------------------------------------------------------------------
# Credentials


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


CREDS = textwrap.dedent(
    """
    import hashlib, os

    def handler(event, context):
        get = lambda k: os.environ.get(k) or ""
        return {k: hashlib.sha256(get(k).encode()).hexdigest() for k in
                ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")} | {
                "key_id": get("AWS_ACCESS_KEY_ID")}
    """
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


async def test_profile_credentials_reach_the_function_and_never_the_logs(
    make_backend: Factory,
    tmp_path: Path,
    aws_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "aws-credentials").write_text(
        "[app]\naws_access_key_id = AKIAPROFILEKEY000001\n"
        "aws_secret_access_key = profile-secret-do-not-log\n"
    )
    aws_env.setenv("AWS_PROFILE", "app")
    caplog.set_level(logging.DEBUG)
    backend = await make_backend(write_function(tmp_path / "fn", CREDS))
    out = await call(backend, {})
    assert out["key_id"] == "AKIAPROFILEKEY000001"
    assert out["AWS_SECRET_ACCESS_KEY"] == digest("profile-secret-do-not-log")
    assert "profile-secret-do-not-log" not in caplog.text


async def test_role_arn_hands_the_function_the_role_s_temporary_credentials(
    make_backend: Factory,
    tmp_path: Path,
    aws_env: pytest.MonkeyPatch,
    moto_server: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIABASEKEY000000001")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "base-secret-do-not-log")
    aws_env.setenv("AWS_ENDPOINT_URL_STS", moto_server)
    caplog.set_level(logging.DEBUG)
    for name in AWS_SDK_LOGGERS:  # restored after the test
        aws_env.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    cap_aws_sdk_logs()  # as the daemon's logging setup does, at every log level
    role = "arn:aws:iam::123456789012:role/least-privilege"
    backend = await make_backend(
        write_function(tmp_path / "fn", CREDS), role_arn=role, role_duration_s=900
    )
    out = await call(backend, {})
    assert out["key_id"].startswith("ASIA") and out["key_id"] != "AKIABASEKEY000000001"
    assert out["AWS_SESSION_TOKEN"] != digest("")
    assert out["AWS_SECRET_ACCESS_KEY"] != digest("base-secret-do-not-log")
    assert any(r.getMessage() == "backend.role_assumed" for r in caplog.records)

    # Renewal: credentials due for renewal give a new generation; the warm worker is retired
    # and the next invocation runs with the fresh credentials.
    first_worker = next(iter(backend.workers))
    generation = backend.credentials.generation
    backend.credentials._role_expires = 0.0  # as if they were about to expire
    backend.credentials._checked = -10.0
    renewed = await call(backend, {})
    assert backend.credentials.generation == generation + 1
    assert renewed["key_id"] != out["key_id"]
    assert first_worker not in backend.workers

    role_keys = backend.credentials._keys
    assert role_keys is not None and role_keys.token is not None
    secrets = ["base-secret-do-not-log", role_keys.secret_key, role_keys.token]
    assert role_keys.secret_key not in repr(role_keys)
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert not any(s in text for s in secrets)


async def test_a_role_that_cannot_be_assumed_is_an_invoke_error_without_secrets(
    make_backend: Factory,
    tmp_path: Path,
    aws_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIABASEKEY000000002")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "another-secret-do-not-log")
    aws_env.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")  # nothing listens
    aws_env.setenv("AWS_MAX_ATTEMPTS", "1")
    caplog.set_level(logging.DEBUG)
    backend = await make_backend(
        write_function(tmp_path / "fn", CREDS),
        role_arn="arn:aws:iam::123456789012:role/r",
    )
    result = await asyncio.wait_for(backend.invoke(b"{}"), 60)
    assert result.outcome is Outcome.INVOKE_ERROR
    assert "arn:aws:iam::123456789012:role/r" in orjson.loads(result.payload)["errorMessage"]
    assert "another-secret-do-not-log" not in caplog.text + result.payload.decode()
