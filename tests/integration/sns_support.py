"""SNS as it signs HTTP deliveries, for tests: a CA generated here, the signing certificate
SNS would serve, and messages built and signed over AWS's string to sign."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from triggerd_sns_http.signature import string_to_sign

TOPIC = "arn:aws:sns:us-east-1:123456789012:real-topic"
SUB = TOPIC + ":8a21d249-4329-4871-acc6-7be709c6ea7f"
#: Where the signing certificate is served, under the pinned host's https base.
CERT_PATH = "/SimpleNotificationService-test.pem"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    ca_file: Path
    server_ctx: ssl.SSLContext
    signing_key: rsa.RSAPrivateKey
    signing_pem: bytes
    other_key: rsa.RSAPrivateKey


def make_pki(tmp: Path) -> Pki:
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(4)]
    ca_key, server_key, signing_key, other_key = keys
    ca = _cert("test SNS CA", ca_key, "test SNS CA", ca_key, ca=True)
    server = _cert("127.0.0.1", server_key, "test SNS CA", ca_key, ip="127.0.0.1")
    signing = _cert("sns.amazonaws.com", signing_key, "test SNS CA", ca_key)
    (tmp / "ca.pem").write_bytes(_pem(ca))
    (tmp / "server.pem").write_bytes(
        _pem(server)
        + server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "server.pem")
    return Pki(tmp / "ca.pem", ctx, signing_key, _pem(signing), other_key)


def sns_message(
    cert_base: str, kind: str = "Notification", version: str = "1", **fields: Any
) -> dict[str, Any]:
    """An unsigned SNS HTTP message of `kind` whose certificate is at `cert_base`."""
    doc: dict[str, Any] = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Message": "hello",
        "Timestamp": "2026-12-06T04:00:00.123Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_base + CERT_PATH,
    }
    if kind == "Notification":
        doc["Subject"] = "Subj"
        doc["UnsubscribeURL"] = cert_base + "/?Action=Unsubscribe&SubscriptionArn=" + SUB
        doc["MessageAttributes"] = {"kind": {"Type": "String", "Value": "big"}}
    else:
        doc["Token"] = "tok-" + doc["MessageId"]
        doc["SubscribeURL"] = cert_base + "/confirm?Token=" + doc["Token"]
    doc.update(fields)
    return doc


def sign_message(doc: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """`doc` with its Signature, as SNS signs its SignatureVersion."""
    algorithm = hashes.SHA1() if doc["SignatureVersion"] == "1" else hashes.SHA256()
    signature = key.sign(string_to_sign(doc), padding.PKCS1v15(), algorithm)
    doc["Signature"] = base64.b64encode(signature).decode()
    return doc
