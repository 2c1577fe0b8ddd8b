"""Config pieces for connectors of AWS services (or services speaking their APIs)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from triggerd.types import Model


class AwsCredentials(Model):
    """Static AWS credentials for a connector's config model to mix in; without them the
    standard chain signs (environment, shared config/credentials files, container and
    instance roles)."""

    aws_access_key_id: SecretStr | None = Field(
        default=None, description="Static credentials (default: the standard AWS chain)."
    )
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None

    @model_validator(mode="after")
    def _key_pair(self) -> AwsCredentials:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("aws_access_key_id and aws_secret_access_key go together")
        return self

    def client_credentials(self) -> dict[str, str]:
        """Keyword arguments for an aiobotocore client: the static keys, or none."""
        keys: dict[str, str] = {}
        if self.aws_access_key_id is not None and self.aws_secret_access_key is not None:
            keys["aws_access_key_id"] = self.aws_access_key_id.get_secret_value()
            keys["aws_secret_access_key"] = self.aws_secret_access_key.get_secret_value()
            if self.aws_session_token is not None:
                keys["aws_session_token"] = self.aws_session_token.get_secret_value()
        return keys
