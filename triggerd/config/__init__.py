"""The config file (TOML or YAML, `${VAR}` interpolation), the pydantic models of its daemon,
function and trigger sections, and the registry of source, destination and backend plugins
found through entry points; `aws` holds the AWS connection and credential settings that
AWS-backed connectors share.

Imports `triggerd.events` (filter patterns are checked at load time), `state`, `telemetry`
and `triggerd.types`; never a plugin module directly (plugins are loaded by entry point)."""
