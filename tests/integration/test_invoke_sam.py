"""`triggerd invoke --sam template.yaml FUNCTION` and `--serverless serverless.yml FUNCTION`:
one command, as `sam local invoke -t template.yaml FUNCTION -e event.json`, translating the
definition in memory (its warnings on stderr, as `run --sam` prints them) and answering the
handler's result; the overrides file and `--opt` apply as they do to `run`. A config named
beside `--sam`/`--serverless` is a usage error (exit 2), for invoke and record alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.triggerd_cli import triggerd_cli

pytestmark = pytest.mark.integration
pytest.importorskip("cfnlint")

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work directory for the module: the runtime's boto3 is installed into it once."""
    return tmp_path_factory.mktemp("invoke-sam-work")


def overrides(cwd: Path, work_dir: Path) -> str:
    """An overrides file in `cwd` with the module's work directory and the listeners (which
    invoke does not open; the template's SNS topic needs a control listener to be valid)."""
    (cwd / "local.yaml").write_text(
        f'daemon:\n  work_dir: "{work_dir}"\n  listen: ""\n'
        f'  control_listen: "127.0.0.1:{free_port()}"\n'
    )
    return "local.yaml"


def test_invoke_sam_answers_the_handlers_result(tmp_path: Path, work_dir: Path) -> None:
    shutil.copytree(DATA / "sam", tmp_path / "app")
    cwd = tmp_path / "app"
    (cwd / "e.json").write_text(json.dumps({"rawPath": "/hi", "requestContext": {"stage": "v"}}))
    done = triggerd_cli(
        cwd,
        "invoke",
        "--sam",
        "template.yaml",
        "ApiFunction",
        "--event",
        "e.json",
        "--overrides",
        overrides(cwd, work_dir),
        "--parameter-overrides",
        "Greeting=hey",
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["statusCode"] == 200
    # GREETING is !If [DevAndHello, "${Greeting} from ${Stage}", bye]: "hello from dev" by
    # default, "bye" once the parameter makes the condition false.
    assert json.loads(answer["body"]) == {"path": "/hi", "stage": "v", "greeting": "bye"}
    assert (
        "triggerd: template.yaml: warning: Resources.ApiFunction.Properties.Tracing" in done.stderr
    )


def test_invoke_serverless_answers_the_handlers_result(tmp_path: Path, work_dir: Path) -> None:
    shutil.copytree(DATA / "serverless" / "http", tmp_path / "svc")
    cwd = tmp_path / "svc"
    event = {
        "version": "2.0",
        "requestContext": {"http": {"method": "GET"}},
        "pathParameters": {"name": "ann"},
    }
    (cwd / "e.json").write_text(json.dumps(event))
    done = triggerd_cli(
        tmp_path,
        "invoke",
        "--serverless",
        "svc/serverless.yml",
        "greet",
        "-e",
        "svc/e.json",
        "--opt",
        "stage=test",
        "--overrides",
        f"svc/{overrides(cwd, work_dir)}",
        env={"GREETING": "hi"},
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(json.loads(done.stdout)["body"])
    assert body == {
        "message": "hi, ann",
        "stage": "test",
        "payload": "2.0",
        "method": "GET",
        "function": "greet",
    }


def test_invoke_sam_names_functions_by_logical_id(tmp_path: Path) -> None:
    shutil.copytree(DATA / "sam", tmp_path / "app")
    done = triggerd_cli(
        tmp_path / "app", "invoke", "--sam", "template.yaml", "api", "-e", "template.yaml"
    )
    assert done.returncode == 2
    assert "no function 'api' in template.yaml" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("invoke", "ApiFunction", "-c", "triggerd.toml", "--sam", "template.yaml"),
        ("record", "T", "--out", "o", "-c", "triggerd.toml", "--serverless", "serverless.yml"),
        ("invoke", "ApiFunction", "--sam", "template.yaml", "--serverless", "serverless.yml"),
    ],
)
def test_a_config_beside_sam_or_serverless_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    done = triggerd_cli(tmp_path, *args)
    assert done.returncode == 2
    assert "give one of -c/--config, --sam FILE and --serverless FILE" in done.stderr


def test_overrides_without_sam_or_serverless_is_a_usage_error(tmp_path: Path) -> None:
    done = triggerd_cli(tmp_path, "record", "T", "--out", "o", "--opt", "stage=x")
    assert done.returncode == 2
    assert "--opt need --sam or --serverless" in done.stderr
