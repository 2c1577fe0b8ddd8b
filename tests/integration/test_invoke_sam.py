"""`triggerd invoke --sam template.yaml FUNCTION` and `--serverless serverless.yml FUNCTION`:
one command, as `sam local invoke -t template.yaml FUNCTION -e event.json`, translating the
definition in memory (its warnings on stderr, as `run --sam` prints them) and answering the
handler's result; the overrides file and `--opt` apply as they do to `run`. A config named
beside `--sam`/`--serverless` is a usage error (exit 2), for invoke and record alike; `record
--sam` captures a template's trigger as fixtures that `invoke --sam` replays."""

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
RECORDER = Path(__file__).resolve().parents[1] / "system" / "functions" / "recorder"

#: A bucket whose S3 event the overrides file maps to a local directory.
RECORD_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Uploads:
    Type: AWS::S3::Bucket
  Recorder:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Handler: app.handler
      CodeUri: recorder
      Environment:
        Variables:
          RECORD_FILE: {record_file}
      Events:
        Upload:
          Type: S3
          Properties:
            Bucket: !Ref Uploads
            Events: s3:ObjectCreated:*
"""


def overrides(cwd: Path) -> str:
    """An overrides file in `cwd` naming the listeners (which invoke and record do not open;
    the template's SNS topic needs a control listener to be valid). The runtime's boto3 is
    installed once a session, into tests/conftest.py's runtimes_dir."""
    (cwd / "local.yaml").write_text(
        f'daemon:\n  listen: ""\n  control_listen: "127.0.0.1:{free_port()}"\n'
    )
    return "local.yaml"


def test_invoke_sam_answers_the_handlers_result(tmp_path: Path) -> None:
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
        overrides(cwd),
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


def test_invoke_serverless_answers_the_handlers_result(tmp_path: Path) -> None:
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
        f"svc/{overrides(cwd)}",
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


def test_record_sam_then_invoke_sam_replays_the_fixture(tmp_path: Path) -> None:
    shutil.copytree(RECORDER, tmp_path / "recorder", ignore=shutil.ignore_patterns("__pycache__"))
    calls = tmp_path / "calls.jsonl"
    (tmp_path / "template.yaml").write_text(RECORD_TEMPLATE.format(record_file=calls))
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a.txt").write_text("a")
    local = overrides(tmp_path)
    with (tmp_path / local).open("a") as f:
        f.write(
            "resources:\n  Uploads:\n    type: directory\n    path: inbox\n"
            "    starting_position: TRIM_HORIZON\n"
        )
    sam = ("--sam", "template.yaml", "--overrides", local)
    done = triggerd_cli(tmp_path, "record", "Recorder-Upload", "--out", "fixtures", "-n", "1", *sam)
    assert done.returncode == 0, done.stderr
    fixture = tmp_path / "fixtures" / "Recorder-Upload-0001.json"
    event = json.loads(fixture.read_text())
    assert event["Records"][0]["s3"]["object"]["key"] == "a.txt"
    # Recording invoked nothing: the handler's file appears only with the replay.
    assert not calls.exists()

    replay = triggerd_cli(tmp_path, "invoke", "Recorder", "-e", str(fixture), *sam)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout) == {"ok": ["a.txt"]}
    assert [json.loads(line)["event"] for line in calls.read_text().splitlines()] == [event]


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
