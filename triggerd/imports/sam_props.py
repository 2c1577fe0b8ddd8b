"""An event's Properties as the event translators read them: each value taken is resolved
(a warning when it cannot be), and every property left untaken is a warning."""

from __future__ import annotations

from typing import Any

from triggerd.imports.common import Translation
from triggerd.imports.sam_template import NO_VALUE, Template, Unresolved

#: Properties of AWS's that need no local counterpart, with the reason.
ESM_IGNORED = {
    "KmsKeyArn": "filter criteria are not encrypted locally",
    "MetricsConfig": "triggerd's metrics are always on (/metrics)",
    "ProvisionedPollerConfig": "pollers are not provisioned locally",
    "SourceAccessConfigurations": "credentials come from the overrides file",
    "SecretsManagerKmsKeyId": "credentials come from the overrides file",
    "DynamicPolicyName": "IAM is not used locally",
    "LoggingConfig": "not simulated locally",
}


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


class Props:
    """An event's Properties: values taken are resolved; the rest are warned about."""

    def __init__(self, tpl: Template, out: Translation, where: str, props: Any) -> None:
        self.tpl, self.out, self.where = tpl, out, where
        self.raw: dict[str, Any] = dict(props) if isinstance(props, dict) else {}
        self.used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def take(self, key: str, default: Any = None) -> Any:
        """The resolved value of `key` (None with a warning when it cannot be resolved;
        `default` when it is absent or AWS::NoValue, as CloudFormation removes it)."""
        self.used.add(key)
        if key not in self.raw:
            return default
        try:
            value = self.tpl.resolve(self.raw[key])
        except Unresolved as exc:
            self.out.warn(f"{self.where}.{key}", f"not carried over: {exc}")
            return None
        return default if value is NO_VALUE else value

    def node(self, key: str) -> Any:
        self.used.add(key)
        return self.raw.get(key)

    def finish(self) -> None:
        for key in sorted(set(self.raw) - self.used):
            why = ESM_IGNORED.get(key, "not carried over (no triggerd equivalent)")
            self.out.warn(f"{self.where}.{key}", f"ignored: {why}" if key in ESM_IGNORED else why)
