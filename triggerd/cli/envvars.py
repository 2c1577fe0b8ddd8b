"""`triggerd invoke --env-vars FILE`: SAM CLI's environment-variable overrides.

The file is SAM's: a JSON object whose keys are function names, each an object of variables,
and `Parameters`, variables for every function; the function's own entry wins over
`Parameters`, and both win over the config's `environment`. Values may be strings, numbers or
booleans (written as JSON writes them, as SAM does); null, objects and lists become "", as
in SAM CLI. Unlike SAM, a variable the config does
not declare is added too: there is no template to declare it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from triggerd.config.model import ConfigBase

PARAMETERS = "Parameters"


class EnvVarsError(Exception):
    """The file cannot be read or is not in SAM's format (one line)."""


def _variables(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise EnvVarsError(f"{where} is not an object of variables")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            out[key] = str(item)
        else:
            # null, an object or a list (an intrinsic function SAM could not resolve) is the
            # empty string, as SAM CLI makes it: a file `sam local invoke` takes works here.
            out[key] = ""
    return out


def read_env_vars(path: Path, function: str) -> dict[str, str]:
    """The overrides the file gives `function` (Parameters, then its own entry)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EnvVarsError(f"cannot read the --env-vars file {path}: {exc.strerror}") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvVarsError(f"the --env-vars file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EnvVarsError(
            f"the --env-vars file {path} is not an object "
            '({"FUNCTION": {"VAR": "value"}, "Parameters": {...}})'
        )
    merged = _variables(f"{path}: {PARAMETERS}", doc.get(PARAMETERS, {}))
    merged.update(_variables(f"{path}: {function}", doc.get(function, {})))
    return merged


def with_env_vars(cfg: ConfigBase, function: str, path: Path) -> ConfigBase:
    """`cfg` with `function`'s environment overridden from the file, validated as the config's
    own `environment` is (reserved names, Lambda's 4 KB limit)."""
    overrides = read_env_vars(path, function)
    fcfg = cfg.function_map[function]
    if not overrides:
        return cfg
    if "environment" not in type(fcfg).model_fields:
        backend = getattr(fcfg, "backend", "?")
        raise EnvVarsError(
            f"--env-vars: function {function} runs on the {backend} backend, whose "
            "environment triggerd does not set (local functions only)"
        )
    # Only the fields the config set: validating defaults as if set would trip the checks of
    # options that need another one (role_session_name without role_arn).
    fields = {name: getattr(fcfg, name) for name in fcfg.model_fields_set}
    fields["environment"] = {**getattr(fcfg, "environment", {}), **overrides}
    try:
        updated = type(fcfg).model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        raise EnvVarsError(f"--env-vars {path}: {function}: {problems}") from None
    return cfg.model_copy(update={"functions": {**cfg.functions, function: updated}})
