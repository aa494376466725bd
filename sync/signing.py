"""Ed25519 signatures on receipt messages: only the central side can say "stored".

Without them any client that may publish on a device's ``down/rcpt`` topic (an anonymous broker,
a broker without an ACL, a compromised device on a shared broker) could confirm captures the
central side never had, and the device would later evict that media. The ingesters hold the
private key; devices hold the public key.

One signature covers one whole receipt message (a batch), detached from the payload and carried
in the MQTT 5 user property ``fieldcap-sig``. It signs a context string, the topic and the exact
payload bytes, so a receipt for device A cannot be replayed to device B (whose topic differs), a
signature cannot be reused for another purpose, and the payload format stays as it was.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.errors import SyncError

SIG_PROPERTY = "fieldcap-sig"
_CONTEXT = b"fieldcap receipt v1\n"
COMMAND_CONTEXT = b"fieldcap command v1\n"  # commands (``sync.commands``): a receipt signature is no command
_SCHEME = "ed25519:"
PRIVATE_NAME = "receipt-key"  # also the systemd credential name ($CREDENTIALS_DIRECTORY/receipt-key)
PUBLIC_NAME = "receipt-key.pub"
_MAKE = "make a key pair with `fieldcap central keygen`"
_COPY = "copy receipt-key.pub made by `fieldcap central keygen`"


class KeyFileError(SyncError):
    """A key file that cannot be used; the text says which file and what to do."""


def _message(topic: str, payload: bytes, context: bytes = _CONTEXT) -> bytes:
    return context + topic.encode() + b"\n" + payload


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, for logs and ``keygen``'s output."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class ReceiptSigner:
    """The ingester's side: signs each receipt message it publishes."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.key_id = key_id(key.public_key())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReceiptSigner:
        data = _read(path, "receipt private key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc}); {_MAKE}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an Ed25519 key; {_MAKE}")
        return cls(key)

    def sign(self, topic: str, payload: bytes, context: bytes = _CONTEXT) -> str:
        """The value of the ``fieldcap-sig`` user property for this message (a receipt unless ``context``)."""
        return _SCHEME + base64.b64encode(self._key.sign(_message(topic, payload, context))).decode()


class ReceiptVerifier:
    """The device's side: checks that a receipt message was signed by the central side for this topic."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.key_id = key_id(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReceiptVerifier:
        data = _read(path, "receipt public key")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not a PEM public key ({exc}); {_COPY}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: not an Ed25519 public key; {_COPY}")
        return cls(key)

    def check(self, topic: str, payload: bytes, signature: str | None, context: bytes = _CONTEXT) -> str | None:
        """None if the signature is good; otherwise why the message must be refused."""
        if not signature:
            return "unsigned"
        if not signature.startswith(_SCHEME):
            return "unknown signature scheme"
        try:
            raw = base64.b64decode(signature[len(_SCHEME) :], validate=True)
        except (binascii.Error, ValueError):
            return "signature is not base64"
        try:
            self._key.verify(raw, _message(topic, payload, context))
        except InvalidSignature:
            return "bad signature"
        return None


def signature_of(properties: object) -> str | None:
    """The ``fieldcap-sig`` user property of a received message (the first one), or None."""
    for item in getattr(properties, "UserProperty", None) or ():
        if isinstance(item, tuple) and len(item) == 2 and item[0] == SIG_PROPERTY and isinstance(item[1], str):
            return item[1]
    return None


def generate(out_dir: Path) -> tuple[Path, Path, str]:
    """Write a new key pair (private key mode 0600); refuse to overwrite an existing one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private, public = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    for p in (private, public):
        if p.exists():
            raise KeyFileError(f"{p} already exists; remove it first or choose another --out directory")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key()
    public.write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, key_id(pub)


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} file {str(path)!r} not found; fix the path ({_MAKE})") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the {what} file {str(path)!r}: {exc.strerror}") from None
