"""The `local` backend's plugin object (the `triggerd.backends` entry point): its config model
and checks, with the backend itself (`local`: workers, the Runtime API, its HTTP machinery)
imported only when a function is created or built, so that `triggerd validate` and other
commands that only read the config do not pay for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triggerd.functions.backends.local_config import LocalFunctionConfig
from triggerd.functions.backends.local_credentials import needs_aiobotocore
from triggerd.functions.backends.local_prepare import check
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


async def _check(config: Any, name: str) -> None:
    assert isinstance(config, LocalFunctionConfig)
    await check(config, name, files=False)
    try:
        needs_aiobotocore(config.role_arn)
    except MissingExtraError as e:
        raise ConfigError([f"functions.{name}.role_arn: {e}"]) from None


async def _build(config: Any, ctx: BackendContext, progress: ProgressFn) -> None:
    from triggerd.functions.backends.local import build

    await build(config, ctx, progress)


plugin = BackendPlugin(config_model=LocalFunctionConfig, create=_create, check=_check, build=_build)
