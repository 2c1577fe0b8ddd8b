"""Credentials for a local function, as an execution role gives them to a Lambda function.

The daemon resolves its own credentials through aiobotocore's standard chain (environment,
shared config and credentials files with profiles and SSO, container and instance roles); with
`role_arn`, it assumes that role through STS with them and hands the function the role's
temporary credentials instead. Workers get them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN when they start. Environment variables of a running process cannot change,
so when the credentials are renewed (the chain refreshes them before they expire; assumed-role
credentials are renewed once less than the function's timeout plus `RENEW_MARGIN_S` is left),
a new `generation` begins and warm workers of an older one are retired instead of reused: the
next invocation starts a worker with the fresh credentials.

Without aiobotocore installed, the daemon's own AWS_* variables are passed on unchanged.
Nothing here logs or formats a secret: errors carry the AWS error code and message only.
"""

from __future__ import annotations

import datetime
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from triggerd.types import Clock, MissingExtraError, RetryableError

if TYPE_CHECKING:  # `validate` imports this module for needs_aiobotocore only
    import asyncio
    import logging

_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
#: How often, at most, the chain is asked whether its credentials changed.
CHECK_INTERVAL_S = 1.0
#: Assumed-role credentials are renewed when less than the function's timeout plus this is left.
RENEW_MARGIN_S = 300.0


#: Variables that name credentials only the SDK's chain can resolve (not plain keys).
_CHAIN_ONLY_ENV = (
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@dataclass(frozen=True, slots=True)
class Keys:
    access_key: str
    secret_key: str
    token: str | None

    def env(self) -> dict[str, str]:
        out = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        if self.token:
            out["AWS_SESSION_TOKEN"] = self.token
        return out

    def __repr__(self) -> str:  # never the secret in a traceback or a log line
        return f"Keys(access_key={self.access_key[:4]}..., secret_key=***)"


def _aiobotocore_session() -> Any:
    try:
        module = importlib.import_module("aiobotocore.session")
    except ImportError:
        return None
    return module.get_session()


#: The daemon's own credentials chain (aiobotocore's session and what `get_credentials`
#: found, None without aiobotocore), shared by every function: the credentials are the
#: process's, and one resolution costs about 60-70 ms on a machine without any (the
#: instance metadata service is asked, through two TLS contexts built for it), which each
#: function's first worker used to wait for. One resolution is kept: for the running event
#: loop and a digest of the environment it read (HOME and the AWS_* variables), until a
#: reload forgets it (`forget_daemon_chain`).
_shared: tuple[asyncio.AbstractEventLoop, bytes, asyncio.Task[tuple[Any, Any]]] | None = None


def _environment_digest(environ: Mapping[str, str]) -> bytes:
    """What the chain depends on, as a digest: the secrets in it are not kept."""
    import hashlib

    items = sorted((k, v) for k, v in environ.items() if k.startswith("AWS_") or k == "HOME")
    return hashlib.sha256(repr(items).encode(), usedforsecurity=False).digest()


async def _resolve_chain() -> tuple[Any, Any]:
    import asyncio

    # aiobotocore's import is about 150 ms of CPU: in a thread, so that the event loop
    # (a daemon getting ready, a Runtime API answering) is not held up by it.
    session = await asyncio.to_thread(_aiobotocore_session)
    if session is None:
        return None, None
    return session, await session.get_credentials()


async def daemon_chain() -> tuple[Any, Any]:
    """The session and credentials chain of this process, resolved by the first caller and
    shared with the rest (a resolution that failed or was cancelled is not kept: the next
    caller tries again)."""
    import asyncio

    global _shared
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    while True:
        digest = _environment_digest(os.environ)
        shared = _shared
        if shared is None or shared[0] is not loop or shared[1] != digest or _spoilt(shared[2]):
            shared = _shared = (loop, digest, loop.create_task(_resolve_chain()))
        task = shared[2]
        try:
            # One waiter cancelled (a stopping backend) does not cancel the others'.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled() or (me is not None and me.cancelling()):
                raise  # this caller was cancelled
            # The resolution itself was cancelled, not this caller: resolve again.
        except Exception:
            if _shared is shared:
                _shared = None
            raise


def _spoilt(task: asyncio.Task[tuple[Any, Any]]) -> bool:
    """A resolution not to hand on: cancelled, or failed (when no waiter saw it fail)."""
    return task.done() and (task.cancelled() or task.exception() is not None)


def forget_daemon_chain() -> None:
    """The next function to start resolves the chain again (a reload: credentials written
    or renewed since the daemon started are found, as a restart would find them). Functions
    already waiting for the resolution under way keep it."""
    global _shared
    _shared = None


def needs_aiobotocore(role_arn: str | None) -> None:
    """role_arn needs STS, hence aiobotocore (MissingExtraError naming the extra)."""
    if role_arn is not None and _aiobotocore_session() is None:
        raise MissingExtraError("role_arn needs aiobotocore: pip install 'triggerd-daemon[aws]'")


class CredentialSource:
    """The credentials a function's workers get, and their generation."""

    def __init__(
        self,
        *,
        function: str,
        region: str,
        clock: Clock,
        log: logging.Logger,
        timeout_s: float,
        role_arn: str | None = None,
        session_name: str | None = None,
        duration_s: int = 3600,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._function = function
        self._region = region
        self._clock = clock
        self._log = log
        self._role_arn = role_arn
        self._session_name = session_name or function
        self._duration_s = duration_s
        self._renew_margin_s = timeout_s + RENEW_MARGIN_S
        self._environ = os.environ if environ is None else environ
        self._session: Any = None
        self._chain: Any = None
        self._keys: Keys | None = None
        self._role_expires = 0.0
        self._checked = -CHECK_INTERVAL_S
        self._failing = False
        self._error = ""
        #: Incremented whenever the keys change: workers of an older generation are retired.
        self.generation = 0

    async def start(self) -> None:
        self._session, chain = await daemon_chain()
        if self._session is None:
            if self._role_arn is not None:
                needs_aiobotocore(self._role_arn)
            keys = self._static()
            if keys is None and any(k in self._environ for k in _CHAIN_ONLY_ENV):
                # A profile, SSO or container role is named but only aiobotocore resolves it:
                # say so instead of starting the function without credentials silently.
                self._log.warning(
                    "backend.credentials_unresolved",
                    extra={
                        "function": self._function,
                        "reason": "AWS_PROFILE / container credentials need aiobotocore: "
                        "pip install 'triggerd-daemon[aws]'",
                    },
                )
            self._set(keys)
            return
        self._chain = chain
        await self.refresh(force=True)

    def _static(self) -> Keys | None:
        env = self._environ
        if "AWS_ACCESS_KEY_ID" in env and "AWS_SECRET_ACCESS_KEY" in env:
            return Keys(
                env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
            )
        return None

    def _set(self, keys: Keys | None) -> None:
        if keys != self._keys:
            self._keys = keys
            self.generation += 1

    def env(self) -> dict[str, str]:
        """The variables for a new worker (empty when there are no credentials)."""
        return self._keys.env() if self._keys is not None else {}

    def due(self) -> bool:
        """Whether `refresh` has anything to do (a clock read: the warm path calls it)."""
        return self._clock.monotonic() - self._checked >= CHECK_INTERVAL_S or (
            self._keys is None and self._failing
        )

    async def refresh(self, force: bool = False) -> None:
        """Renew the credentials when they are due (checked at most every second). When
        renewal fails, the last good credentials stay and the failure is logged once;
        with role_arn and no credentials yet, RetryableError."""
        now = self._clock.monotonic()
        if not force and now - self._checked < CHECK_INTERVAL_S:
            if self._keys is None and self._role_arn is not None and self._failing:
                raise RetryableError(f"assuming {self._role_arn} failed: {self._error}")
            return
        self._checked = now
        if self._session is None:
            return
        try:
            keys = await self._resolve()
        except Exception as e:  # botocore raises many kinds; the message holds no secret
            message = self._error = _describe(e)
            if not self._failing:
                self._failing = True
                self._log.warning(
                    "backend.credentials_failed",
                    extra={"function": self._function, "error": message},
                )
            if self._keys is None and self._role_arn is not None:
                raise RetryableError(f"assuming {self._role_arn} failed: {message}") from None
            return
        if self._failing:
            self._failing = False
            self._log.info("backend.credentials_renewed", extra={"function": self._function})
        self._set(keys)

    async def _resolve(self) -> Keys | None:
        base = None
        if self._chain is not None:
            frozen = await self._chain.get_frozen_credentials()
            base = Keys(frozen.access_key, frozen.secret_key, frozen.token)
        if self._role_arn is None:
            return base
        renew_at = self._role_expires - self._renew_margin_s
        if self._keys is not None and self._clock.time() < renew_at:
            return self._keys
        if base is None:
            raise RetryableError("no AWS credentials found to assume the role with")
        return await self._assume(base)

    async def _assume(self, base: Keys) -> Keys:
        async with self._session.create_client(
            "sts",
            region_name=self._region,
            aws_access_key_id=base.access_key,
            aws_secret_access_key=base.secret_key,
            aws_session_token=base.token,
        ) as sts:
            answer = await sts.assume_role(
                RoleArn=self._role_arn,
                RoleSessionName=self._session_name,
                DurationSeconds=self._duration_s,
            )
        creds = answer["Credentials"]
        expiration = creds["Expiration"]
        if isinstance(expiration, datetime.datetime):
            self._role_expires = expiration.timestamp()
        else:
            self._role_expires = self._clock.time() + self._duration_s
        self._log.info(
            "backend.role_assumed",
            extra={
                "function": self._function,
                "role_arn": self._role_arn,
                "expires": datetime.datetime.fromtimestamp(
                    self._role_expires, datetime.UTC
                ).isoformat(),
            },
        )
        return Keys(creds["AccessKeyId"], creds["SecretAccessKey"], creds.get("SessionToken"))


def _describe(exc: Exception) -> str:
    """An AWS error's code and message (ClientError), or the exception's type and text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"
