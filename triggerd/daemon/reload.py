"""Live reload (SIGHUP, `triggerd reload`) and pause/resume of one trigger.

A reload reads and validates the config file first: a broken file changes nothing and is
reported in one log line. Otherwise only what changed is restarted:

- unchanged triggers keep running untouched;
- new and changed functions get their backends started first (if one cannot start, the
  reload is abandoned and the running config kept); the Invoke API uses a new backend at once;
- removed triggers drain (in-flight batches finish and are settled), then stop; changed
  ones, and those whose function changed, drain and start again with the new settings; a
  webhook's routes are swapped in one step, so its path never answers 404 in between;
- added triggers start;
- old backends of changed and removed functions stop last, once the triggers that replace
  theirs serve (a webhook's routes call the old backend until then) and their invocations
  in flight finished;
- a function whose `[async_invocation]` settings alone changed gets its queue of
  asynchronous invocations rebuilt with them (the events on it stay queued);
- daemon settings other than `shutdown_timeout_s` and `log_level`, and `[telemetry]`, need a
  restart: one log line names them, and they keep their running values;
- a trigger that failed to start at an earlier reload or resume is tried again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from triggerd.config.load import load_config
from triggerd.config.model import ConfigBase
from triggerd.daemon.app import DaemonStoppingError
from triggerd.daemon.changes import ConfigChanges, enabled_triggers
from triggerd.daemon.inflight import CountedBackend
from triggerd.functions.backends.local_credentials import forget_daemon_chain
from triggerd.http.pausing import TriggerNotFoundError, TriggerUnnamedError
from triggerd.types import TriggerdError

if TYPE_CHECKING:
    from triggerd.daemon.app import Daemon, Function

log = logging.getLogger("triggerd.daemon")


class TriggerStartError(TriggerdError):
    """A resumed trigger could not start (it is resumed, and shown failing in /readyz)."""


async def read_config(daemon: Daemon) -> ConfigBase | None:
    """The config file (or the translation `run --sam/--serverless` makes again),
    validated; None (and one log line why) when it cannot be used."""
    loader = daemon.config_loader
    path = daemon.config_path if loader is None else daemon.config_source or "the definition"
    if path is None:
        log.error("daemon.reload_refused", extra={"error": "the daemon has no config file"})
        daemon.last_reload = {"status": "rejected", "error": "the daemon has no config file"}
        return None
    try:
        if loader is not None:
            return await asyncio.to_thread(loader)
        return await asyncio.to_thread(load_config, path, daemon.registry)
    except (TriggerdError, ValueError, OSError) as exc:  # ValueError: e.g. not UTF-8
        problems = getattr(exc, "problems", None) or [str(exc)]
        daemon.last_reload = {"status": "rejected", "error": f"{path}: {'; '.join(problems)}"}
        log.error(
            "daemon.reload_rejected",
            extra={
                "path": path,
                "error": f"{path}: {'; '.join(problems)}; keeping the running config",
            },
        )
        return None


async def apply_changes(daemon: Daemon, changes: ConfigChanges) -> bool:
    """Apply a validated config's changes (see the module docstring); False if abandoned."""
    if changes.needs_restart:
        log.warning(
            "daemon.reload_needs_restart",
            extra={
                "settings": list(changes.needs_restart),
                "error": f"{', '.join(changes.needs_restart)} changed: needs a restart; "
                "keeping the running values",
            },
        )
    new = changes.config
    # New and changed functions look for the daemon's credentials again, as their backends
    # did before they shared one lookup: what was written or renewed since is found.
    forget_daemon_chain()
    fresh = await _start_functions(daemon, changes)
    if fresh is None:
        return False
    old_config = daemon.config
    daemon.config = new
    logging.getLogger().setLevel(new.daemon.log_level.upper())
    old_functions = {n: daemon.functions[n] for n in changes.functions_changed}
    old_functions |= {n: daemon.functions[n] for n in changes.functions_removed}
    for name in changes.functions_removed:
        del daemon.functions[name]
    daemon.functions.update(fresh)
    old_triggers = enabled_triggers(old_config)
    new_triggers = enabled_triggers(new)
    restart = changes.triggers_changed | {
        n for n, t in old_triggers.items() if n in new_triggers and t.function in old_functions
    }
    # Unchanged triggers that failed to start at an earlier reload or resume: try again.
    retry = {
        n
        for n in new_triggers.keys() - daemon.slots.keys() - daemon.paused
        if n not in changes.triggers_added and n not in restart
    }
    await asyncio.gather(
        *(daemon.stop_invoke_queue(n) for n in old_functions.keys() | changes.async_changed),
        *(daemon.stop_trigger(n) for n in changes.triggers_removed),
        *(daemon.stop_trigger(n, keep_routes=True) for n in restart),
    )
    started, failed = 0, []
    for name, tcfg in new_triggers.items():
        wanted = name in restart or name in changes.triggers_added or name in retry
        if not wanted or name in daemon.paused:
            continue
        try:
            await daemon.start_trigger(name, tcfg, replacing=name in restart)
            started += 1
        except Exception as exc:  # one trigger's start failure must not stop the others
            reason = "; ".join(getattr(exc, "problems", None) or [str(exc)])
            if daemon.listen_address is None and "daemon.listen" in reason:
                # The file gives a listen address, but the listener opens only at start.
                reason = f"{reason}: needs a restart: no listen address"
            log.error("trigger.start_failed", extra={"trigger": name, "error": reason})
            daemon.trigger_problems[name] = f"failed to start: {reason}"
            failed.append(name)
    for name, tcfg in new_triggers.items():
        if name in daemon.paused and (name in restart or name in changes.triggers_added):
            daemon.routes.remove_routes(name)  # its placeholders, for its new path
            daemon.hold_routes(name, tcfg)
    for name in sorted(fresh.keys() | changes.async_changed):
        await daemon.start_invoke_queue(name)
    # Only now: the restarted triggers' routes (kept until their replacements committed
    # theirs) called the old backends up to here; what they started there finishes first.
    timeout_s = new.daemon.shutdown_timeout_s
    await asyncio.gather(*(_retire_backend(fn, timeout_s) for fn in old_functions.values()))
    summary = {
        "functions_added": sorted(changes.functions_added),
        "functions_removed": sorted(changes.functions_removed),
        "functions_changed": sorted(changes.functions_changed),
        "async_invocation_changed": sorted(changes.async_changed),
        "triggers_added": sorted(changes.triggers_added),
        "triggers_removed": sorted(changes.triggers_removed),
        "triggers_restarted": sorted(restart | retry),
        "triggers_failed": failed,
    }
    log.info("daemon.reloaded", extra=summary)
    daemon.last_reload = {
        "status": "failed" if failed else "reloaded",
        **summary,
        "needs_restart": list(changes.needs_restart),
        "failures": {n: daemon.trigger_problems.get(n, "") for n in failed},
    }
    return not failed


async def _start_functions(daemon: Daemon, changes: ConfigChanges) -> dict[str, Function] | None:
    """Backends of the new and changed functions, started; None if one cannot start (the
    ones started are stopped again)."""
    fresh: dict[str, Function] = {}
    for name in sorted(changes.functions_added | changes.functions_changed):
        try:
            fresh[name] = await daemon.start_function(name, changes.config.function_map[name])
        except Exception as exc:  # boundary: the running config stays
            reason = "; ".join(getattr(exc, "problems", None) or [str(exc)])
            daemon.last_reload = {
                "status": "rejected",
                "error": f"function {name} cannot start: {reason}",
            }
            log.error(
                "daemon.reload_rejected",
                extra={
                    "function": name,
                    "error": f"function {name} cannot start: {reason}; keeping the running config",
                },
            )
            for fn in fresh.values():
                await _stop_backend(fn)
            return None
    return fresh


async def _retire_backend(fn: Function, timeout_s: float) -> None:
    """Stop a replaced backend once its invocations in flight (Invoke API, synchronous
    webhooks) finished, or after `timeout_s`."""
    if isinstance(fn.backend, CountedBackend) and not await fn.backend.wait_idle(timeout_s):
        log.warning(
            "function.drain_timeout",
            extra={"function": fn.name, "in_flight": fn.backend.in_flight},
        )
    await _stop_backend(fn)


async def _stop_backend(fn: Function) -> None:
    try:
        await fn.backend.stop()
    except Exception:  # boundary: a backend failing to stop must not stop the reload
        log.exception("function.stop_failed", extra={"function": fn.name})


async def pause(daemon: Daemon, name: str) -> bool:
    """Record the pause, then drain and stop the trigger. False when it was paused already."""
    triggers = enabled_triggers(daemon.config)
    if name not in triggers:
        raise TriggerNotFoundError(f"no enabled trigger {name!r} in the running config")
    if triggers[name].name is None:
        raise TriggerUnnamedError(unnamed_message(name))
    assert daemon.state is not None
    async with daemon._lifecycle:
        if daemon.stopping:
            raise DaemonStoppingError()
        if name in daemon.paused:
            return False
        await daemon.state.set_paused(name, True)
        daemon.paused.add(name)
        await daemon.stop_trigger(name, keep_routes=True)
        daemon.hold_routes(name)
    log.info("trigger.paused", extra={"trigger": name})
    daemon.notifier.status(daemon.status_line())
    return True


def unnamed_message(name: str) -> str:
    return (
        f"trigger {name} has no name: give it a `name` in the config to pause it (a pause is "
        "kept by name, and a default name <function>-<index> moves to another trigger when "
        "triggers are reordered)"
    )


async def resume(daemon: Daemon, name: str) -> bool:
    """Record the resume, then start the trigger. False when it was not paused."""
    triggers = enabled_triggers(daemon.config)
    if name not in triggers:
        raise TriggerNotFoundError(f"no enabled trigger {name!r} in the running config")
    assert daemon.state is not None
    async with daemon._lifecycle:
        if daemon.stopping:
            raise DaemonStoppingError()
        if name not in daemon.paused:
            return False
        await daemon.state.set_paused(name, False)
        daemon.paused.discard(name)
        try:
            # Its placeholder routes (503 while paused) give way in one step.
            held = name in daemon.routes.owners()
            await daemon.start_trigger(name, triggers[name], replacing=held)
        except Exception as exc:  # boundary: reported to the caller and in /readyz
            reason = "; ".join(getattr(exc, "problems", None) or [str(exc)])
            daemon.trigger_problems[name] = f"failed to start: {reason}"
            log.error("trigger.start_failed", extra={"trigger": name, "error": reason})
            raise TriggerStartError(
                f"trigger {name} is resumed but failed to start: {reason}"
            ) from None
    log.info("trigger.resumed", extra={"trigger": name})
    daemon.notifier.status(daemon.status_line())
    return True
