"""The Serverless Framework's variables as the translator resolves them, and hostile files
(cycles, files outside the service, deep nesting, alias bombs): one clear error each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from triggerd.imports.serverless import translate_serverless
from triggerd.imports.serverless_vars import Resolver, Unresolved
from triggerd.imports.serverless_yaml import Intrinsic, read_yaml
from triggerd.types import ConfigError

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "serverless" / "hostile"


def resolve(
    tmp_path: Path,
    text: str,
    options: dict[str, str] | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    file = tmp_path / "serverless.yml"
    file.write_text(text)
    warnings: list[tuple[str, str]] = []
    resolver = Resolver(
        read_yaml(file, "serverless.yml"),
        tmp_path,
        options or {},
        environ or {},
        lambda where, message: warnings.append((where, message)),
    )
    return resolver.resolve_all(), warnings


def test_sources_defaults_and_nesting(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "dev.json").write_text('{"db": {"port": 5432}, "name": "${self:service}"}')
    data, warnings = resolve(
        tmp_path,
        """
service: svc
provider: {name: aws, stage: dev}
custom:
  stage: ${opt:stage, self:provider.stage}
  names: {dev: d-name, prod: p-name}
  name: ${self:custom.names.${self:custom.stage}}
  port: ${file(./conf/${self:custom.stage}.json):db.port}
  file: ${file(./conf/dev.json)}
  env: ${env:HOME_DIR}
  fallback: ${env:UNSET, 'text, with comma'}
  number: ${env:UNSET, 7}
  flag: ${env:UNSET, true}
  chain: ${env:UNSET, ${opt:missing, "last"}}
  bare: ${env:UNSET, plain}
  inline: "${self:service}-${sls:stage}-${aws:region}"
  sub: !Sub "arn:${AWS::Partition}:s3:::${BucketName}"
  att: !GetAtt Queue.Arn
  long: {"Fn::GetAtt": [Queue, Arn]}
  list: ["${self:custom.stage}", 2]
""",
        options={"region": "ap-south-1"},
        environ={"HOME_DIR": "/home/x"},
    )
    custom = data["custom"]
    assert custom["name"] == "d-name" and custom["port"] == 5432
    assert custom["file"] == {"db": {"port": 5432}, "name": "svc"}
    assert custom["env"] == "/home/x"
    assert custom["fallback"] == "text, with comma"
    assert (custom["number"], custom["flag"], custom["chain"]) == (7, True, "last")
    assert custom["bare"] == "plain"
    assert custom["inline"] == "svc-dev-ap-south-1"
    assert custom["sub"] == Intrinsic("Fn::Sub", "arn:${AWS::Partition}:s3:::${BucketName}")
    assert custom["att"] == custom["long"] == Intrinsic("Fn::GetAtt", ["Queue", "Arn"])
    assert custom["list"] == ["dev", 2]
    assert warnings == []


def test_unresolved_variables_warn_where(tmp_path: Path) -> None:
    data, warnings = resolve(
        tmp_path,
        """
service: svc
custom:
  a: ${env:NOPE}
  b: prefix-${ssm:/path/x}
  c: ${file(./absent.yml):x}
  d: ${file(./code.js):x}
  e: ${self:custom.nothing}
""",
    )
    assert all(isinstance(v, Unresolved) for v in data["custom"].values())
    where = dict(warnings)
    assert set(where) == {f"custom.{k}" for k in "abcde"}
    assert "ssm:/path/x needs the Serverless Framework or AWS" in where["custom.b"]
    assert "does not exist" in where["custom.c"]
    assert "code is not run" in where["custom.d"]


def test_stage_and_region_defaults(tmp_path: Path) -> None:
    data, _ = resolve(tmp_path, "service: s\ncustom: {s: '${sls:stage}', r: '${aws:region}'}\n")
    assert data["custom"] == {"s": "dev", "r": "us-east-1"}
    data, warnings = resolve(tmp_path, "service: s\ncustom: {a: '${aws:accountId}'}\n")
    assert data["custom"]["a"] == "123456789012" and "--opt accountId" in warnings[0][1]


def test_unresolved_required_value_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        translate_serverless(
            HOSTILE / "unresolved_handler.yml", overrides=None, options={}, environ={}
        )
    assert err.value.problems == [
        "functions.f.handler: required, but ${env:HANDLER_FROM_ENV} could not be resolved"
    ]


def test_cycle_is_one_error() -> None:
    with pytest.raises(ConfigError) as err:
        translate_serverless(HOSTILE / "cycle.yml", overrides=None, options={}, environ={})
    (problem,) = err.value.problems
    assert problem.startswith("serverless.yml: variables refer to each other in a cycle: ")
    assert "custom.b -> custom.c -> custom.a -> custom.b" in problem


def test_self_reference_to_own_parent_is_a_cycle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cycle"):
        resolve(tmp_path, "custom:\n  x:\n    y: ${self:custom}\n")


def test_file_outside_the_service_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        translate_serverless(HOSTILE / "escape.yml", overrides=None, options={}, environ={})
    (problem,) = err.value.problems
    assert problem.startswith("custom.secret: ${file(../../../../../../etc/passwd)}")
    assert "outside the service directory" in problem


def test_symlink_out_of_the_service_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.yml"
    outside.write_text("secret: 1\n")
    service = tmp_path / "svc"
    service.mkdir()
    (service / "link.yml").symlink_to(outside)
    with pytest.raises(ConfigError, match="outside the service directory"):
        resolve(service, "custom: ${file(./link.yml):secret}\n")


def test_deep_nesting_is_one_error(tmp_path: Path) -> None:
    file = tmp_path / "serverless.yml"
    file.write_text("custom: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as err:
        translate_serverless(file, overrides=None, options={}, environ={})
    (problem,) = err.value.problems
    assert "nested too deeply" in problem
    file.write_text("custom: " + "[" * 80 + "]" * 80 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        translate_serverless(file, overrides=None, options={}, environ={})


def test_deeply_nested_variables_are_one_error(tmp_path: Path) -> None:
    chain = "\n".join(f"  v{i}: ${{self:custom.v{i + 1}}}" for i in range(40))
    with pytest.raises(ConfigError, match="nested more than 32 deep"):
        resolve(tmp_path, f"custom:\n{chain}\n  v40: end\n")


def test_variables_inside_variables_too_deep_is_one_error(tmp_path: Path) -> None:
    deep = "${env:X, " * 2000 + "'end'" + "}" * 2000
    with pytest.raises(ConfigError, match=r"custom\.x: variables nested more than 32 deep"):
        resolve(tmp_path, f'custom:\n  x: "{deep}"\n')
    shallow = "${env:X, " * 5 + "'end'" + "}" * 5
    data, _ = resolve(tmp_path, f'custom:\n  x: "{shallow}"\n')
    assert data["custom"]["x"] == "end"


def test_alias_bomb_is_one_error(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    with pytest.raises(ConfigError, match="over 200000 values once expanded"):
        resolve(tmp_path, "\n".join(lines) + "\n")


def test_not_yaml_and_too_large(tmp_path: Path) -> None:
    file = tmp_path / "serverless.yml"
    file.write_text("service: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line 2\)"):
        translate_serverless(file, overrides=None, options={}, environ={})
    file.write_text("x: " + "a" * (3 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="over the 2097152 bytes limit"):
        translate_serverless(file, overrides=None, options={}, environ={})
