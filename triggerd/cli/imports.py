"""`triggerd import sam|serverless FILE` and the translation behind `triggerd run --sam FILE`
/ `--serverless FILE`: another tool's definition of functions and triggers as triggerd
config (docs/sam.md)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from triggerd.config.load import validate_data
from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry
from triggerd.imports.common import Overrides, Translation, load_overrides, render_toml
from triggerd.types import ConfigError, ExitCode, MissingExtraError

__all__ = ["import_group", "load_translated", "translation_options"]

log = logging.getLogger("triggerd.daemon")

#: Keys of a translated config that hold paths relative to the definition's directory.
_FUNCTION_PATHS = ("code", "requirements")


def pairs(items: Iterable[str], option: str) -> dict[str, str]:
    """KEY=VALUE items, several to an item when separated by spaces, and SAM's
    `ParameterKey=K,ParameterValue=V` form; quotes are shell quotes (`Env="a b"`), split
    with shlex as SAM CLI does."""
    found: dict[str, str] = {}
    for item in items:
        try:
            words = shlex.split(item)
        except ValueError as exc:
            raise click.BadParameter(f"{item!r}: {exc}", param_hint=option) from None
        for word in words:
            if word.startswith("ParameterKey="):
                key, _, value = word.partition(",ParameterValue=")
                found[key.removeprefix("ParameterKey=")] = value
                continue
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"{word!r} is not KEY=VALUE", param_hint=option)
            found[key] = value
    return found


def translate(
    kind: str,
    file: str,
    overrides_path: str | None,
    parameters: Mapping[str, str],
    options: Mapping[str, str],
) -> Translation:
    """The translation of `file`, or one line per problem and exit 2."""
    try:
        overrides = load_overrides(overrides_path) if overrides_path else None
        translation = _translate(kind, Path(file), overrides, parameters, options)
        write_files(Path(file).resolve().parent, translation.files)
        return translation
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"triggerd: {problem}", err=True)
    except MissingExtraError as exc:
        click.echo(f"triggerd: {exc}", err=True)
    sys.exit(ExitCode.CONFIG_INVALID)


def _translate(
    kind: str,
    path: Path,
    overrides: Overrides | None,
    parameters: Mapping[str, str],
    options: Mapping[str, str],
) -> Translation:
    if kind == "sam":
        if options:
            raise ConfigError([f"--opt {next(iter(options))}: serverless files only"])
        from triggerd.imports.sam import translate_sam

        return translate_sam(path, overrides=overrides, parameters=parameters)
    if parameters:
        raise ConfigError([f"--parameter-overrides {next(iter(parameters))}: SAM templates only"])
    from triggerd.imports.serverless import translate_serverless

    return translate_serverless(path, overrides=overrides, options=options, environ=os.environ)


def write_files(base: Path, files: Mapping[str, str]) -> None:
    """Write the files a translation holds inline (under `base`; unchanged ones are left
    alone); ConfigError naming the one that cannot be written."""
    for relative, text in files.items():
        target = base / relative
        try:
            if target.is_file() and target.read_text(encoding="utf-8") == text:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError([f"cannot write {target}: {reason}"]) from None


def printable(text: str) -> str:
    """`text` with its control characters (newlines, escapes, line separators) written as
    Python escapes: warnings quote the definition's keys, which must neither end a TOML
    comment (and inject config) nor drive the terminal."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp")
        else ch
        for ch in text
    )


def _warn(file: str, translation: Translation) -> None:
    for warning in translation.warnings:
        click.echo(printable(f"triggerd: {file}: warning: {warning}"), err=True)


def rebase(config: dict[str, Any], source_dir: Path, target_dir: Path) -> dict[str, Any]:
    """`config` with the relative paths of its functions (code, requirements, layers),
    directory sources and file destinations, which are relative to `source_dir`, made
    relative to `target_dir`."""

    def move(value: Any) -> Any:
        if not isinstance(value, str) or os.path.isabs(value):
            return value
        return os.path.relpath(source_dir / value, target_dir)

    functions = {}
    for name, fn in (config.get("functions") or {}).items():
        fn = dict(fn)
        for key in _FUNCTION_PATHS:
            if key in fn:
                fn[key] = move(fn[key])
        if "layers" in fn:
            fn["layers"] = [move(v) for v in fn["layers"]]
        functions[name] = fn
    triggers = []
    for trigger in config.get("triggers") or []:
        for key in ("source", "on_failure"):
            table = trigger.get(key) or {}
            if table.get("type") in ("directory", "file") and "path" in table:
                trigger = {**trigger, key: {**table, "path": move(table["path"])}}
        triggers.append(trigger)
    return {**config, "functions": functions, "triggers": triggers}


def translation_options(kind: str) -> list[Any]:
    """The options `import sam|serverless` share."""
    found = [
        click.option(
            "--overrides",
            "overrides_path",
            type=click.Path(dir_okay=False),
            help="YAML or TOML file mapping AWS resources to local ones (docs/sam.md)",
        ),
        click.option(
            "--output",
            "-o",
            type=click.Path(dir_okay=False),
            help="Write the config to this file (paths in it relative to its directory)",
        ),
    ]
    if kind == "sam":
        found.append(
            click.option(
                "--parameter-overrides",
                "parameters",
                multiple=True,
                metavar="KEY=VALUE",
                help="Template parameter values, as sam deploy takes them",
            )
        )
    else:
        found.append(
            click.option(
                "--opt", "options", multiple=True, metavar="KEY=VALUE", help="${opt:KEY} values"
            )
        )
    return found


def _print_config(kind: str, file: str, translation: Translation, output: str | None) -> None:
    target = Path(output).resolve().parent if output else Path.cwd()
    config = rebase(translation.config, Path(file).resolve().parent, target)
    header = [printable(f"# Translated by `triggerd import {kind} {file}`.")]
    if translation.warnings:
        header.append(
            f"# {len(translation.warnings)} warning(s): what was not carried over as it is:"
        )
        header += [f"#   {printable(str(w))}" for w in translation.warnings]
    text = "\n".join(header) + "\n\n" + render_toml(config)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        click.echo(f"triggerd: cannot write {output}: {exc.strerror}", err=True)
        sys.exit(ExitCode.CONFIG_UNREADABLE)


@click.group("import")
def import_group() -> None:
    """Print the triggerd config equivalent to an AWS SAM template or a serverless.yml."""


def _add(kind: str, doc: str) -> None:
    def command(
        file: str,
        overrides_path: str | None,
        output: str | None,
        parameters: tuple[str, ...] = (),
        options: tuple[str, ...] = (),
    ) -> None:
        params = pairs(parameters, "--parameter-overrides")
        opts = pairs(options, "--opt")
        translation = translate(kind, file, overrides_path, params, opts)
        _warn(file, translation)
        _print_config(kind, file, translation, output)

    command.__doc__ = doc
    decorated: Any = command
    for option in reversed(translation_options(kind)):
        decorated = option(decorated)
    decorated = click.argument("file", type=click.Path(dir_okay=False))(decorated)
    import_group.add_command(click.command(kind)(decorated))


_add(
    "sam",
    "Print the config for an AWS SAM template FILE: one local function per "
    "AWS::Serverless::Function, one trigger per event; warnings on stderr.",
)
_add(
    "serverless",
    "Print the config for a Serverless Framework FILE (serverless.yml); warnings on stderr.",
)


def load_translated(
    kind: str,
    file: str,
    overrides_path: str | None,
    parameters: Iterable[str],
    options: Iterable[str],
    registry: Registry,
) -> tuple[ConfigBase, Callable[[], ConfigBase]]:
    """For `run --sam|--serverless`: the validated config of `file` (its paths relative to
    it), its warnings printed; one line per problem and exit 2 when it is not valid. With
    it, the reload's loader: the same translation again (the definition and the overrides
    file read anew), ConfigError when it is not valid, its warnings logged."""
    params = pairs(parameters, "--parameter-overrides")
    opts = pairs(options, "--opt")
    translation = translate(kind, file, overrides_path, params, opts)
    _warn(file, translation)
    source = Path(file).resolve()
    overrides_file = str(Path(overrides_path).resolve()) if overrides_path else None

    def reload() -> ConfigBase:
        overrides = load_overrides(overrides_file) if overrides_file else None
        again = _translate(kind, source, overrides, params, opts)
        write_files(source.parent, again.files)
        for warning in again.warnings:
            log.info("import.warning", extra={"path": str(source), "warning": str(warning)})
        return validate_data(again.config, registry, base_dir=source.parent)

    try:
        cfg = validate_data(translation.config, registry, base_dir=source.parent)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"triggerd: {file} (translated): {problem}", err=True)
        sys.exit(ExitCode.CONFIG_INVALID)
    return cfg, reload
