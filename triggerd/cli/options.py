"""How every command names its config: `-c/--config FILE`, the CONFIG argument of run,
validate and build, `$TRIGGERD_CONFIG`, else `./triggerd.toml`; one line and exit 8 when
there is none or two."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from triggerd.types import ExitCode

__all__ = [
    "CONFIG_ENV",
    "config_argument",
    "config_option",
    "config_option_beside_argument",
    "resolve_config",
    "translation_source_options",
]

CONFIG_ENV = "TRIGGERD_CONFIG"
#: Used when no config is named and the current directory has one.
DEFAULT_CONFIG = "triggerd.toml"


def _config_option(*, resolve: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--config",
        "-c",
        "config_path",
        default=None,
        # readable=False: an unreadable file is _load's one line and exit 8, not click's
        # three-line usage error and exit 2.
        type=click.Path(dir_okay=True, readable=False),
        # Resolved at parse time, so a command gets a path (or the one-line error) without
        # doing anything itself; run, validate and build resolve it with their argument.
        callback=(lambda ctx, param, value: resolve_config(None, value)) if resolve else None,
        help=f"Config file (TOML or YAML); default ${CONFIG_ENV}, else ./{DEFAULT_CONFIG}",
    )


#: `-c/--config FILE` (or $TRIGGERD_CONFIG, else ./triggerd.toml): the command gets a str.
config_option = _config_option(resolve=True)
#: The same option beside a CONFIG argument (run, validate, build): resolve_config(arg, opt).
config_option_beside_argument = _config_option(resolve=False)
#: The config as the main argument of run, validate and build.
config_argument = click.argument(
    "config", required=False, type=click.Path(dir_okay=True, readable=False)
)


def translation_source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--sam FILE / --serverless FILE instead of a config, with --overrides,
    --parameter-overrides and --opt: the options run, invoke and record share (the command
    gets sam_file, serverless_file, overrides_path, parameters and options)."""
    options = (
        click.option(
            "--sam",
            "sam_file",
            type=click.Path(dir_okay=False),
            help="Use an AWS SAM template instead of a config (as `triggerd import sam` "
            "translates it); functions are named by their logical ids",
        ),
        click.option(
            "--serverless",
            "serverless_file",
            type=click.Path(dir_okay=False),
            help="Use a Serverless Framework file (serverless.yml) instead of a config",
        ),
        click.option(
            "--overrides",
            "overrides_path",
            type=click.Path(dir_okay=False),
            help="With --sam/--serverless: the file mapping AWS resources to local ones",
        ),
        click.option(
            "--parameter-overrides",
            "parameters",
            multiple=True,
            metavar="KEY=VALUE",
            help="With --sam: template parameter values",
        ),
        click.option(
            "--opt",
            "options",
            multiple=True,
            metavar="KEY=VALUE",
            help="With --serverless: ${opt:KEY}",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


def resolve_config(positional: str | None, option: str | None) -> str:
    """The one config file a command uses: CONFIG or -c/--config (both only when they name
    the same file), else $TRIGGERD_CONFIG, else ./triggerd.toml; a one-line error otherwise.
    The variable is a default only: a config named on the command line wins over it."""
    if positional and option and not _same_file(positional, option):
        click.echo(f"triggerd: two configs named ({positional} and {option}): give one", err=True)
        sys.exit(ExitCode.CONFIG_UNREADABLE)
    path = positional or option or os.environ.get(CONFIG_ENV)
    if path:
        return path
    if Path(DEFAULT_CONFIG).exists():
        return DEFAULT_CONFIG
    click.echo(
        f"triggerd: no config file: name it (CONFIG or -c/--config) or set {CONFIG_ENV} "
        f"(there is no ./{DEFAULT_CONFIG} here)",
        err=True,
    )
    sys.exit(ExitCode.CONFIG_UNREADABLE)


def _same_file(a: str, b: str) -> bool:
    """Whether two spellings name one file (`t.toml` and `./t.toml`, a symlink)."""
    return Path(a).resolve() == Path(b).resolve()
