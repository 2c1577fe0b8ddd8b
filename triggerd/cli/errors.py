"""How the commands report an error they end on: `triggerd: ...` on stderr, and the exit
status it stands for (docs/cli.md's table of exit codes)."""

from __future__ import annotations

import click

from triggerd.types import ConfigError, ExitCode, OperatorError

__all__ = ["say_config_error", "say_operator_error"]


def say_operator_error(exc: OperatorError) -> int:
    """The error on one line; its own exit status."""
    click.echo(f"triggerd: {exc}", err=True)
    return int(exc.exit_code)


def say_config_error(exc: ConfigError) -> int:
    """One line per problem; exit status 2 (CONFIG_INVALID)."""
    for problem in exc.problems:
        click.echo(f"triggerd: {problem}", err=True)
    return int(ExitCode.CONFIG_INVALID)
