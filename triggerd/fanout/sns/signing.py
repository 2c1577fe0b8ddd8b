"""Signing the notifications of `[sns]` topics with the operator's own key, so a handler that
verifies an `aws:sns` event's signature (as AWS's documentation asks of HTTP subscribers) can
check it against the certificate the operator serves at `signing_cert_url`.

The string to sign is AWS's for a Notification (`Name\\nValue\\n` for Message, MessageId,
Subject when there is one, Timestamp, TopicArn, Type); SignatureVersion 1 is SHA1withRSA,
2 SHA256withRSA (PKCS#1 v1.5), as SNS signs. RSA comes from the `cryptography` package (the
`sns_http` extra), imported only when a key is configured."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Signer", "SigningKeyError", "notification_string_to_sign"]

_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")


class SigningKeyError(ValueError):
    """The key file cannot be used: the reason, never the key."""


def notification_string_to_sign(doc: Mapping[str, Any]) -> bytes:
    return "".join(f"{key}\n{doc[key]}\n" for key in _KEYS if doc.get(key) is not None).encode(
        "utf-8"
    )


class Signer:
    def __init__(self, key_pem: bytes, cert_url: str, version: str = "1") -> None:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise SigningKeyError("not an unencrypted PEM private key (PKCS#1 or PKCS#8)") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SigningKeyError("the key is not RSA (SNS signatures are RSA)")
        if key.key_size < 2048:
            raise SigningKeyError(f"the RSA key has {key.key_size} bits; 2048 at least")
        self._key = key
        self._hash: hashes.HashAlgorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        self.cert_url = cert_url
        self.version = version

    @classmethod
    def from_file(cls, path: str, cert_url: str, version: str = "1") -> Signer:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls(pem, cert_url, version)

    def sign(self, doc: Mapping[str, Any]) -> str:
        """The base64 signature of the notification `doc`."""
        from cryptography.hazmat.primitives.asymmetric import padding

        raw = self._key.sign(notification_string_to_sign(doc), padding.PKCS1v15(), self._hash)
        return base64.b64encode(raw).decode()
