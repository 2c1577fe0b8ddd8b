"""The `local` backend's plugin object (the `triggerd.backends` entry point): its config model
and checks, with the backend itself (`local`: workers, the Runtime API, its HTTP machinery)
imported only when a function is created or built, so that `triggerd validate` and other
commands that only read the config do not pay for it. A function on triggerd's own Python
is checked at once: `validate` then needs no event loop (asyncio and ssl are about a tenth
of its start-up)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from triggerd.functions.backends.local_config import LocalFunctionConfig
from triggerd.functions.backends.local_credentials import needs_aiobotocore
from triggerd.functions.backends.local_python import is_own_runtime
from triggerd.types import (
    Backend,
    BackendPlugin,
    ConfigError,
    MissingExtraError,
    ProgressFn,
)

if TYPE_CHECKING:
    from triggerd.types import BackendContext

__all__ = ["plugin"]


def _create(config: Any, ctx: BackendContext) -> Backend:
    from triggerd.functions.backends.local import LocalBackend

    assert isinstance(config, LocalFunctionConfig)
    return LocalBackend(config, ctx)


def _check(config: Any, name: str) -> Awaitable[None] | None:
    """None when the function runs on triggerd's own interpreter or its own bootstrap
    (nothing to start: `local_prepare.check` would find the same without awaiting), else
    the check that starts the interpreter (or node) to ask its version."""
    assert isinstance(config, LocalFunctionConfig)
    if config.node or not (config.provided or is_own_runtime(config.runtime, config.interpreter)):
        return _check_interpreter(config, name)
    _check_role(config, name)
    return None


async def _check_interpreter(config: LocalFunctionConfig, name: str) -> None:
    from triggerd.functions.backends.local_prepare import check

    await check(config, name, files=False)
    _check_role(config, name)


def _check_role(config: LocalFunctionConfig, name: str) -> None:
    try:
        needs_aiobotocore(config.role_arn)
    except MissingExtraError as e:
        raise ConfigError([f"functions.{name}.role_arn: {e}"]) from None


async def _build(config: Any, ctx: BackendContext, progress: ProgressFn) -> None:
    from triggerd.functions.backends.local import build

    await build(config, ctx, progress)


plugin = BackendPlugin(config_model=LocalFunctionConfig, create=_create, check=_check, build=_build)
