"""`triggerd invoke --env-vars env.json` in SAM's format: `Parameters` for every function, the
function's own entry over them, both over the config's `environment`; bad files are one line
and exit 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.triggerd_cli import triggerd_cli
from triggerd.cli.envvars import EnvVarsError, read_env_vars, with_env_vars
from triggerd.config.load import load_config
from triggerd.config.plugins import Registry

ECHO = Path(__file__).parent / "functions" / "echo"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "triggerd.toml").write_text(
        f"""
[daemon]
state = "sqlite:///state/state.db"
listen = ""
control_listen = ""

[functions.echo]
handler = "app.handler"
code = "{ECHO}"
environment = {{ GREETING = "config" }}

[functions.remote]
backend = "http"
url = "http://127.0.0.1:9/"
"""
    )
    (tmp_path / "event.json").write_text('{"a": 1}')
    return tmp_path


def invoke(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return triggerd_cli(cwd, "invoke", *args, "-e", "event.json", "-c", "triggerd.toml")


@pytest.mark.integration
def test_function_entry_overrides_parameters_and_config(workdir: Path) -> None:
    env = {"Parameters": {"GREETING": "param"}, "echo": {"GREETING": "own"}}
    (workdir / "env.json").write_text(json.dumps(env))
    done = invoke(workdir, "echo", "--env-vars", "env.json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["env"]["GREETING"] == "own"


def test_parameters_apply_to_every_function(workdir: Path) -> None:
    (workdir / "env.json").write_text(json.dumps({"Parameters": {"GREETING": 5, "DEBUG": True}}))
    assert read_env_vars(workdir / "env.json", "echo") == {"GREETING": "5", "DEBUG": "true"}
    cfg = load_config(str(workdir / "triggerd.toml"), Registry.discover())
    updated = with_env_vars(cfg, "echo", workdir / "env.json")
    assert updated.functions["echo"].environment == {"GREETING": "5", "DEBUG": "true"}
    assert cfg.functions["echo"].environment == {"GREETING": "config"}


def test_null_objects_and_lists_are_blank_as_in_sam(workdir: Path) -> None:
    env = {"echo": {"A": {"Ref": "Table"}, "B": [1], "C": None, "D": 1.5}}
    (workdir / "env.json").write_text(json.dumps(env))
    assert read_env_vars(workdir / "env.json", "echo") == {"A": "", "B": "", "C": "", "D": "1.5"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1]", "is not an object"),
        ("{", "is not valid JSON"),
        ('{"echo": ["x"]}', "echo is not an object of variables"),
        ('{"echo": {"AWS_REGION": "x"}}', "AWS_REGION is reserved by Lambda"),
    ],
)
def test_bad_files_are_refused(workdir: Path, content: str, message: str) -> None:
    (workdir / "env.json").write_text(content)
    cfg = load_config(str(workdir / "triggerd.toml"), Registry.discover())
    with pytest.raises(EnvVarsError, match=message):
        with_env_vars(cfg, "echo", workdir / "env.json")


def test_refused_for_a_backend_without_an_environment(workdir: Path) -> None:
    (workdir / "env.json").write_text('{"remote": {"A": "b"}}')
    cfg = load_config(str(workdir / "triggerd.toml"), Registry.discover())
    with pytest.raises(EnvVarsError, match="http backend"):
        with_env_vars(cfg, "remote", workdir / "env.json")


@pytest.mark.integration
def test_missing_file_is_one_line_and_exit_2(workdir: Path) -> None:
    done = invoke(workdir, "echo", "--env-vars", "nope.json")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "triggerd: cannot read the --env-vars file nope.json: No such file or directory"
    ]
