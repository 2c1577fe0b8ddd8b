"""What a reload changes: the running config compared with the new one, per function, per
trigger (by name) and per daemon setting. Pure: the daemon applies the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from triggerd.config.model import ConfigBase, TriggerBase

#: Daemon settings a reload applies; every other one needs a restart (it keeps its old value).
LIVE_DAEMON_SETTINGS = frozenset({"shutdown_timeout_s", "log_level"})
#: Top-level sections compared piece by piece (`daemon` key by key).
_LIVE_SECTIONS = frozenset({"daemon", "functions", "triggers"})


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    #: The config to run: the new one, with the old values of settings that need a restart.
    config: ConfigBase
    functions_added: frozenset[str]
    functions_removed: frozenset[str]
    functions_changed: frozenset[str]
    #: Enabled triggers, by name (a trigger set to `enabled = false` counts as removed).
    triggers_added: frozenset[str]
    triggers_removed: frozenset[str]
    #: Triggers whose own settings changed, or whose function changed.
    triggers_changed: frozenset[str]
    #: `daemon.<key>` of each setting that changed but needs a restart.
    needs_restart: tuple[str, ...]
    #: Functions kept and unchanged whose `[async_invocation]` settings changed: their
    #: queues of asynchronous invocations are rebuilt (Lambda applies
    #: PutFunctionEventInvokeConfig at once).
    async_changed: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (
            self.functions_added
            or self.functions_removed
            or self.functions_changed
            or self.triggers_added
            or self.triggers_removed
            or self.triggers_changed
            or self.async_changed
        )


def enabled_triggers(config: ConfigBase) -> dict[str, TriggerBase]:
    """The enabled triggers by name, in config order."""
    return {config.trigger_name(i): t for i, t in enumerate(config.trigger_list) if t.enabled}


def _dump(model: Any) -> Any:
    # The config model classes are built anew by every load: compare the values, not the models.
    if model is None:  # an optional section ([sns]) that is absent
        return None
    if isinstance(model, list):  # a section that is a list of models (event_buses)
        return [_dump(item) for item in model]
    if isinstance(model, dict):  # models by name (async_invocation)
        return {key: _dump(item) for key, item in model.items()}
    return model.model_dump(mode="python")


def diff_configs(old: ConfigBase, new: ConfigBase) -> ConfigChanges:
    old_fns, new_fns = old.function_map, new.function_map
    fn_changed = frozenset(
        n for n in old_fns.keys() & new_fns.keys() if _dump(old_fns[n]) != _dump(new_fns[n])
    )
    old_ts, new_ts = enabled_triggers(old), enabled_triggers(new)
    t_changed = frozenset(
        n
        for n in old_ts.keys() & new_ts.keys()
        if _dump(old_ts[n]) != _dump(new_ts[n]) or new_ts[n].function in fn_changed
    )
    needs_restart: list[str] = []
    live: dict[str, Any] = {}
    old_d, new_d = _dump(old.daemon), _dump(new.daemon)
    for key in sorted(old_d.keys() | new_d.keys()):
        if old_d.get(key) == new_d.get(key):
            continue
        if key in LIVE_DAEMON_SETTINGS:
            live[key] = getattr(new.daemon, key)
        else:
            needs_restart.append(f"daemon.{key}")
    daemon = old.daemon.model_copy(update=live)
    # Other sections (telemetry, ...) are set up once at start: they need a restart too.
    kept: dict[str, Any] = {"daemon": daemon}
    for key in sorted(type(new).model_fields.keys() - _LIVE_SECTIONS):
        if key == "event_buses" and old.event_buses and new.event_buses:
            # Read by the EventBridge API on every call: the new buses apply with the new
            # config (only serving them at all, or no longer, needs a restart).
            continue
        if key == "async_invocation":
            continue  # applied per function: async_changed
        if _dump(getattr(old, key)) != _dump(getattr(new, key)):
            needs_restart.append(key)
        kept[key] = getattr(old, key)
    old_async, new_async = old.async_invocation_map, new.async_invocation_map
    async_changed = frozenset(
        n
        for n in (old_fns.keys() & new_fns.keys()) - fn_changed
        if _dump(old_async.get(n)) != _dump(new_async.get(n))
    )
    return ConfigChanges(
        config=new.model_copy(update=kept),
        functions_added=frozenset(new_fns.keys() - old_fns.keys()),
        functions_removed=frozenset(old_fns.keys() - new_fns.keys()),
        functions_changed=fn_changed,
        triggers_added=frozenset(new_ts.keys() - old_ts.keys()),
        triggers_removed=frozenset(old_ts.keys() - new_ts.keys()),
        triggers_changed=t_changed,
        needs_restart=tuple(needs_restart),
        async_changed=async_changed,
    )
