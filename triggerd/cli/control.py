"""`triggerd reload`, `triggerd pause TRIGGER` and `triggerd resume TRIGGER`.

The running daemon is found through its state store's lock file (`<store>.lock`, which the
daemon holds while it runs and in which it writes its pid):

- reload validates the config file here first (a broken file: one line per problem, exit 2,
  the daemon is not disturbed), then calls the daemon's `POST /control/reload` and reports
  its verdict; without a control listener it sends the daemon SIGHUP;
- pause and resume call the daemon's `POST /control/triggers/{name}/pause|resume` on its
  control listener and return once the trigger drained (or started); when nothing answers
  there and no daemon holds the lock, they record the state in the store, applied when the
  daemon starts.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import sys
from urllib.parse import quote

import click

from triggerd.cli.options import (
    config_argument,
    config_option,
    config_option_beside_argument,
    resolve_config,
)
from triggerd.config.model import ConfigBase
from triggerd.daemon.changes import enabled_triggers
from triggerd.state.factory import sqlite_path
from triggerd.state.pgschema import is_postgres_url
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore, StateStoreError
from triggerd.types import ExitCode, OperatorError


def _fail(message: str, status: int = 1) -> None:
    click.echo(f"triggerd: {message}", err=True)
    sys.exit(status)


def _load(config_path: str) -> ConfigBase:
    from triggerd.cli.main import _load as load
    from triggerd.config.plugins import Registry

    return load(config_path, Registry.discover())


def store_path(cfg: ConfigBase) -> str:
    if is_postgres_url(cfg.daemon.state):
        # Several daemons may share it: none is found through it.
        _fail(
            "the daemon's state store is a PostgreSQL database, which has no lock file to find "
            "the daemon by: ask it on its control listener (set control_listen)",
            ExitCode.DAEMON_UNREACHABLE,
        )
    path = sqlite_path(cfg.daemon.state)
    if path == MEMORY_PATH:
        _fail("the daemon's state store is in memory: there is no lock file to find it by")
    return path


def running_pid(db_path: str) -> int | None:
    """The pid of the daemon holding the store's lock; None when no daemon holds it."""
    lock = db_path + ".lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _fail(f"cannot read the state store's lock file {lock}: {exc.strerror or exc}")
        raise  # not reached
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@click.command()
@config_argument
@config_option_beside_argument
def reload(config: str | None, config_path: str | None) -> None:
    """Validate the config file, then make the running daemon reload it: only the triggers,
    functions and routes that changed restart. Exit 2 if the file is invalid or is not the
    daemon's own, 1 if the daemon rejected it or a trigger failed to start."""
    from triggerd.cli.status import daemon_url

    path = resolve_config(config, config_path)
    cfg = _load(path)
    url = daemon_url(cfg)
    unreachable = "it serves no control endpoints (control_listen is empty)"
    if url is not None:
        status, answer = asyncio.run(
            _post(cfg, url, "/control/reload", {"config": os.path.abspath(path)}, RELOAD_KEY)
        )
        if status == 200 and isinstance(answer, dict):
            _report_reload(answer)
            return
        if status:
            _fail(str(answer), 2 if status == 409 else 1)  # the daemon answered, and refused
        unreachable = str(answer)
    # No control listener to ask: SIGHUP, as systemd's ExecReload (no verdict to report).
    db = store_path(cfg)
    pid = running_pid(db)
    if not pid:
        _fail(
            f"no triggerd is running on the state store {db} (nothing holds {db}.lock)",
            ExitCode.DAEMON_UNREACHABLE,
        )
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        _fail(f"cannot signal triggerd (pid {pid}): {exc.strerror or exc}")
    click.echo(
        f"{path}: valid; triggerd (pid {pid}) is reloading it, signalled with SIGHUP since "
        f"{unreachable} (its log says daemon.reloaded, or daemon.reload_rejected and why)"
    )


def _report_reload(answer: dict[str, object]) -> None:
    """The daemon's verdict: what changed, or why not; exit 1 unless it reloaded."""
    status = answer.get("status")
    if status == "rejected":
        _fail(f"reload rejected, the running config kept: {answer.get('error')}")
    parts = []
    for key in (
        "functions_added",
        "functions_removed",
        "functions_changed",
        "async_invocation_changed",
        "triggers_added",
        "triggers_removed",
        "triggers_restarted",
    ):
        names = answer.get(key)
        if isinstance(names, list) and names:
            parts.append(f"{key.replace('_', ' ')}: {', '.join(map(str, names))}")
    click.echo(f"{answer.get('config')}: reloaded; " + ("; ".join(parts) or "nothing changed"))
    needs = answer.get("needs_restart")
    if isinstance(needs, list) and needs:
        click.echo(f"needs a restart (running values kept): {', '.join(map(str, needs))}")
    if status != "reloaded":
        failures = answer.get("failures")
        lines = failures.items() if isinstance(failures, dict) else []
        for name, why in lines:
            click.echo(f"triggerd: trigger {name} {why}", err=True)
        sys.exit(1)


@click.command()
@click.argument("trigger")
@config_option
def pause(trigger: str, config_path: str) -> None:
    """Stop TRIGGER fetching: its in-flight batches finish and are acknowledged, and it stays
    paused (across restarts too) until `triggerd resume`."""
    _pause_or_resume(trigger, config_path, pause=True)


@click.command()
@click.argument("trigger")
@config_option
def resume(trigger: str, config_path: str) -> None:
    """Start a paused TRIGGER again, from where it left off."""
    _pause_or_resume(trigger, config_path, pause=False)


def _pause_or_resume(trigger: str, config_path: str, *, pause: bool) -> None:
    """The daemon's endpoint first; if nothing answers on its control listener and no
    daemon holds the store's lock, the store."""
    from triggerd.cli.status import daemon_url

    cfg = _load(config_path)
    if trigger not in enabled_triggers(cfg):
        names = ", ".join(enabled_triggers(cfg)) or "none"
        _fail(f"no enabled trigger {trigger!r} in {config_path} (triggers: {names})", 2)
    if pause and enabled_triggers(cfg)[trigger].name is None:
        from triggerd.daemon.reload import unnamed_message

        _fail(unnamed_message(trigger), 2)
    url = daemon_url(cfg)
    unreachable = "it serves no control endpoints (control_listen is empty)"
    if url is not None:
        status, message = asyncio.run(_call(cfg, url, trigger, pause))
        if status == 200:
            click.echo(f"trigger {trigger} {message}")
            return
        if status:
            _fail(message)  # the daemon answered, and refused
        unreachable = message
    db = store_path(cfg)
    pid = running_pid(db)
    if pid is not None:
        _fail(f"triggerd (pid {pid}) is running, but {unreachable}", ExitCode.DAEMON_UNREACHABLE)
    if not os.path.exists(db):
        _fail(
            f"the state store {db} does not exist (triggerd never ran, or it keeps its state "
            "elsewhere: under systemd, set STATE_DIRECTORY as the unit does): set "
            "enabled = false on the trigger instead"
        )
    problem = asyncio.run(_record(db, trigger, pause))
    if problem:
        _fail(problem)
    verb = "paused" if pause else "resumed"
    click.echo(f"trigger {trigger} {verb} (triggerd is not running: applies when it starts)")


async def _record(db: str, trigger: str, pause: bool) -> str | None:
    """Record the state in the store; the problem in one line if that fails."""
    store = SQLiteStateStore(db, create=False)
    try:
        await store.open()
        await store.set_paused(trigger, pause)
    except (OperatorError, StateStoreError) as exc:
        return str(exc)
    finally:
        await store.close()
    return None


PAUSE_KEY = (
    "the daemon requires AWS Signature Version 4 (daemon.access_keys): give this command a "
    "key allowed triggerd:PauseTrigger / triggerd:ResumeTrigger (AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or an AWS profile)"
)


async def _call(cfg: ConfigBase, url: str, trigger: str, pause: bool) -> tuple[int, str]:
    action = "pause" if pause else "resume"
    route = f"/control/triggers/{quote(trigger, safe='')}/{action}"
    status, answer = await _post(cfg, url, route, {}, PAUSE_KEY)
    if isinstance(answer, str):
        return status, answer
    if answer.get("changed"):
        return 200, "paused (in-flight batches finished)" if pause else "resumed"
    return 200, "was already paused" if pause else "was not paused"


RELOAD_KEY = (
    "the daemon requires AWS Signature Version 4 (daemon.access_keys): give this command a "
    "key allowed triggerd:Reload (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS "
    "profile)"
)


async def _post(
    cfg: ConfigBase,
    url: str,
    route: str,
    body: dict[str, object],
    no_key: str,
    *,
    service: str = "lambda",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, object] | str]:
    """POST a JSON body to a control endpoint: (status, its JSON object) for a 200, (status,
    message) otherwise, (0, why) when it cannot be reached. `service`: the SigV4 scope's
    service (the AWS APIs on POST / sign as theirs); `headers`: added to the request."""
    import json

    import aiohttp

    from triggerd.cli.status import NOT_OUR_CERTIFICATE, daemon_tls

    try:
        pinned = daemon_tls(cfg)
    except OperatorError as exc:
        return 0, str(exc)
    target = f"{url}{route}"
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    if cfg.daemon.access_keys:
        signed = sign(target, cfg.daemon.region, data, service, headers)
        if signed is None:
            return 1, no_key
        headers |= signed
    timeout = aiohttp.ClientTimeout(total=2 * cfg.daemon.shutdown_timeout_s + 60)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(target, data=data, headers=headers, ssl=pinned) as resp,
        ):
            answer = await resp.json(content_type=None)
    except aiohttp.ServerFingerprintMismatch:
        return 0, f"cannot be reached at {url}: {NOT_OUR_CERTIFICATE}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return 0, f"cannot be reached at {url}: {exc or type(exc).__name__}"
    if not isinstance(answer, dict):
        return 0, f"triggerd at {url} answered {resp.status} without a JSON object"
    if resp.status != 200:
        return resp.status, str(answer.get("message", f"HTTP {resp.status}"))
    return 200, answer


def sign(
    url: str,
    region: str,
    data: bytes = b"",
    service: str = "lambda",
    headers: dict[str, str] | None = None,
) -> dict[str, str] | None:
    """SigV4 headers for a POST of `data` (with `headers`) to `url` with the standard AWS
    credential chain (environment, profile, ...), as the AWS CLI would sign it; None without
    credentials."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.session import get_session

    credentials = get_session().get_credentials()
    if credentials is None:
        return None
    request = AWSRequest(method="POST", url=url, data=data, headers=dict(headers or {}))
    SigV4Auth(credentials.get_frozen_credentials(), service, region).add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}
