"""The ``[sync]`` section: how a device reaches the broker.

Credentials are never values here: ``password_file`` and the TLS paths name files that the agent
reads (relative names resolve in systemd's ``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Strict):
    """TLS towards the broker; all paths are credential files."""

    ca_file: str = Field(description="CA certificate (PEM) that signed the broker's certificate.")
    cert_file: str | None = Field(default=None, description="Client certificate (PEM); its CN is the device id.")
    key_file: str | None = Field(default=None, description="Client private key (PEM).")


class SyncSettings(_Strict):
    """How records and media reach the central side."""

    enabled: bool = Field(default=True, description="Publish the outbox to the broker.")
    broker: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:port or mqtts://host:port (TLS).",
    )
    username: str | None = Field(default=None, description="MQTT username (defaults to the device id).")
    password_file: str | None = Field(default=None, description="File holding the MQTT password.")
    tls: TlsSettings | None = Field(default=None, description="TLS settings; required for mqtts://.")
    allow_plaintext_password: bool = Field(
        default=False,
        description="Allow sending the password over plain mqtt:// to a host other than loopback (anyone on "
        "the path can read it); use mqtts:// instead.",
    )
    receipt_public_key: str | None = Field(
        default=None,
        description="The central side's receipt public key (PEM, receipt-key.pub from `fieldcap central keygen`): "
        "receipts not signed with its private key are refused and recorded as forged_receipt events. Without it "
        "receipts cannot be told from forgeries, so confirmed media is never evicted to free space.",
    )
    chunk_size: int = Field(
        default=65536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Media chunk size in bytes (capped below the broker's maximum packet size).",
    )
    max_inflight: int = Field(default=64, ge=1, le=65535, description="QoS 1 messages in flight at once.")
    keepalive_s: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="MQTT keepalive; a dead or half-open connection is noticed within about 1.5× this.",
    )
    session_expiry_s: int = Field(
        default=86400, ge=0, le=4294967295, description="Broker session expiry after a disconnect."
    )
    receipt_timeout_s: float = Field(
        default=20.0, gt=0, le=3600, description="Seconds without a receipt before asking the central side what it has."
    )
    reconnect_max_s: float = Field(
        default=30.0, ge=0.5, le=3600, description="Longest wait between reconnect attempts (jittered backoff)."
    )
    parallel_blobs: int = Field(default=8, ge=1, le=64, description="Media files uploaded at the same time.")
    bandwidth_bps: int | None = Field(
        default=None, ge=1024, description="Upload cap in bytes per second (none: unlimited)."
    )

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"{value!r} is not a broker URL; use mqtt://host:port or mqtts://host:port")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"{value!r} has a bad port: {exc}") from None
        return value

    @model_validator(mode="after")
    def _tls_for_mqtts(self) -> SyncSettings:
        if self.broker.startswith("mqtts://") and self.tls is None:
            raise ValueError("mqtts:// needs a [sync.tls] section with ca_file")
        return self

    @model_validator(mode="after")
    def _no_cleartext_password(self) -> SyncSettings:
        parts = urlsplit(self.broker)
        if (
            self.password_file
            and parts.scheme == "mqtt"
            and not is_loopback(parts.hostname or "")
            and not self.allow_plaintext_password
        ):
            raise ValueError(
                f"password_file would send the password in clear text over {self.broker} (plain mqtt:// to a "
                "host that is not this machine); use mqtts:// with a [sync.tls] section, or set "
                "allow_plaintext_password = true if the network path is trusted"
            )
        return self


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (traffic that never leaves this machine)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
