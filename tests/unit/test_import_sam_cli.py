"""`triggerd import sam`: the printed config round-trips through `triggerd validate`, warnings
go to stderr (and the file's header), and an operator's mistake is one line and exit 2."""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from triggerd.cli.imports import pairs
from triggerd.cli.main import main
from triggerd.imports.common import load_overrides, render_toml
from triggerd.types import ConfigError

pytest.importorskip("cfnlint")

DATA = Path(__file__).resolve().parents[1] / "data" / "sam"


def test_import_output_round_trips_through_validate(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "triggerd.toml"
    out.parent.mkdir()
    runner = CliRunner()
    result = runner.invoke(main, ["import", "sam", str(DATA / "template.yaml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and all(" warning: Resources." in line or " warning: " in line for line in lines)
    text = out.read_text()
    assert text.startswith("# Translated by `triggerd import sam ")
    assert "#   daemon.control_listen: the SNS topics and event buses are served" in text
    data = tomllib.loads(text)
    # paths now relative to the output file's directory
    code = data["functions"]["ApiFunction"]["code"]
    assert not Path(code).is_absolute()
    assert (out.parent / code).resolve() == DATA / "src" / "api"
    assert (out.parent / data["functions"]["ApiFunction"]["layers"][0]).resolve() == (
        DATA / "layers" / "common"
    )
    # `$` is written `$$`, read back as one `$`
    assert data["functions"]["ApiFunction"]["environment"]["LITERAL"] == "$${NotAVariable}"
    valid = runner.invoke(main, ["validate", str(out)])
    assert valid.exit_code == 0, valid.output
    assert "ok (2 functions, 12 triggers, 1 event buses)" in valid.output


def test_import_to_stdout_with_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(DATA, tmp_path / "app")
    monkeypatch.chdir(tmp_path / "app")
    result = CliRunner().invoke(
        main,
        [
            "import",
            "sam",
            "template.yaml",
            "--parameter-overrides",
            "ParameterKey=Stage,ParameterValue=prod Greeting=hey",
        ],
    )
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    assert "ProdOnly" in data["functions"]
    assert data["functions"]["ApiFunction"]["code"] == "src/api"


def test_mistakes_are_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    template = str(DATA / "template.yaml")
    absent = runner.invoke(main, ["import", "sam", str(tmp_path / "absent.yaml")])
    assert absent.exit_code == 2
    assert len(absent.stderr.splitlines()) == 1 and "cannot read the template" in absent.stderr
    bad = tmp_path / "overrides.yaml"
    bad.write_text("resources:\n  Jobs: {type: sqs}\nfunctions:\n  Fn: {memory: 1}\n")
    result = runner.invoke(main, ["import", "sam", template, "--overrides", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"triggerd: {bad}: functions.Fn.memory: unknown key"
    wrong = runner.invoke(main, ["import", "sam", template, "--parameter-overrides", "Stage"])
    assert wrong.exit_code == 2 and "is not KEY=VALUE" in wrong.output
    both = runner.invoke(main, ["run", "x.toml", "--sam", template])
    assert both.exit_code == 2 and "give one of CONFIG, --sam FILE and --serverless FILE" in (
        both.output
    )
    alone = runner.invoke(main, ["run", "--overrides", str(bad)])
    assert alone.exit_code == 2 and "need --sam or --serverless" in alone.output
    monkeypatch.setitem(sys.modules, "cfnlint.decode", None)  # the sam extra not installed
    missing = runner.invoke(main, ["import", "sam", template])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == (
        "triggerd: reading a SAM template needs cfnlint: pip install 'triggerd-daemon[sam]'"
    )


def test_run_sam_refuses_an_invalid_translation(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "template.yaml").write_text(
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        "      Runtime: python3.11\n      Handler: app.handler\n      CodeUri: src\n"
        "      MemorySize: 64\n"
    )
    result = CliRunner().invoke(main, ["run", "--sam", str(tmp_path / "template.yaml")])
    assert result.exit_code == 2
    assert "(translated): functions.Fn.memory_mb: Input should be greater than or equal to 128" in (
        result.stderr
    )


def test_pairs() -> None:
    assert pairs(["A=1 B=2", "ParameterKey=C,ParameterValue=x=y", "D="], "--x") == {
        "A": "1",
        "B": "2",
        "C": "x=y",
        "D": "",
    }


def test_overrides_file_interpolates_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "overrides.toml"
    path.write_text(
        'endpoint_url = "${ENDPOINT}"\n[resources.Jobs]\ntype = "rabbitmq"\nqueue = "jobs"\n'
    )
    found = load_overrides(path, {"ENDPOINT": "http://127.0.0.1:5000"})
    assert found.endpoint_url == "http://127.0.0.1:5000"
    assert found.resource(None, "Jobs") is not None
    assert found.resources["Jobs"].options == {"queue": "jobs"}
    with pytest.raises(ConfigError, match="environment variable ENDPOINT is not set"):
        load_overrides(path, {})
    path.write_text("[resources.Jobs]\ntype = 3\n")
    with pytest.raises(ConfigError, match=r"resources\.Jobs\.type: Input should be a valid string"):
        load_overrides(path, {})


def test_render_toml_keeps_values_literal() -> None:
    text = render_toml({"daemon": {"a": "x${HOME}", "b": None}, "triggers": [{"n": 1}]})
    assert tomllib.loads(text) == {"daemon": {"a": "x$${HOME}"}, "triggers": [{"n": 1}]}


def test_import_serverless_round_trips_through_validate(tmp_path: Path) -> None:
    service = Path(__file__).resolve().parents[1] / "data" / "serverless" / "http"
    out = tmp_path / "triggerd.toml"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "import",
            "serverless",
            str(service / "serverless.yml"),
            "--opt",
            "stage=dev",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = tomllib.loads(out.read_text())
    assert data["functions"]["greet"]["environment"]["STAGE"] == "dev"  # ${sls:stage} from --opt
    assert (out.parent / data["functions"]["greet"]["code"]).resolve() == service
    valid = runner.invoke(main, ["validate", str(out)])
    assert valid.exit_code == 0, valid.output
    wrong = runner.invoke(
        main,
        ["import", "serverless", str(service / "serverless.yml"), "--parameter-overrides", "A=1"],
    )
    assert wrong.exit_code == 2  # no such option for serverless
    sam_opt = runner.invoke(main, ["run", "--sam", str(DATA / "template.yaml"), "--opt", "a=1"])
    assert sam_opt.exit_code == 2
    assert sam_opt.stderr.strip() == "triggerd: --opt a: serverless files only"
