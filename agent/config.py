"""The agent's TOML configuration, validated strictly.

Each component gets its own section (``[agent]``, ``[[devices]]``, ``[capture.NAME]``, ``[storage]``,
``[qc]``, ``[sync]``, ``[daemon]``, ``[metrics]``) and only ever sees that section. Every model
forbids unknown keys so that a typo is an error rather than a silently ignored setting. Secrets are
never values in the TOML: fields ending in ``_file`` name files, resolved against
``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) when relative.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.capture.pairing import check_pairing
from agent.capture.triggers import TriggerRule, check_capture_policies
from agent.errors import ConfigError
from drivers import DeviceSettings, available_drivers, driver_modality
from models import QcSettings
from sync.settings import SyncSettings

if TYPE_CHECKING:
    from sync.signing import ReceiptVerifier

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSettings(_Strict):
    """Who this device is and where it keeps its data."""

    device_id: Annotated[
        str,
        Field(
            pattern=NAME_PATTERN,
            description="Device identity: the MQTT username / certificate CN and the topic prefix. "
            "Letters, digits, '_', '.', '-' only (no MQTT wildcards or '/').",
        ),
    ]
    site: str = Field(default="", description="Site name recorded with every session and record.")
    station: str = Field(default="", description="Station (room, booth) within the site.")
    data_dir: Path = Field(
        default=Path("/var/lib/fieldcap"),
        description="Directory holding the local catalog (catalog.sqlite) and media/.",
    )


class CaptureSettings(_Strict):
    """What the recorder keeps from one device's stream."""

    policy: Literal["every", "interval", "segment", "readings", "triggered", "take"] = Field(
        description="every: each sample; interval: one sample every interval_s; segment: "
        "continuous audio cut into segment_s files; readings: sensor values in the catalog, "
        "synced in batches of batch_s; triggered: what lies within pre_s before and post_s after "
        "each trigger (a rule in triggers, or an operator/API call); take: booth takes started "
        "and stopped through the session API, padded by pre_s and post_s."
    )
    pre_s: float = Field(
        default=1.0, ge=0, le=60, description="Seconds kept before a trigger or a take start (ring buffer)."
    )
    post_s: float = Field(default=1.0, ge=0, le=600, description="Seconds kept after a trigger or a take stop.")
    triggers: tuple[TriggerRule, ...] = Field(
        default=(), description="Sensor or analyzer rules that open a window (policy triggered)."
    )
    interval_s: float = Field(default=10.0, gt=0, le=86400, description="Seconds between kept frames (interval).")
    segment_s: float = Field(default=30.0, gt=0.1, le=3600, description="Length of an audio segment (segment).")
    batch_s: float = Field(default=10.0, gt=0, le=3600, description="Seconds of readings per synced batch (readings).")
    image_format: Literal["jpeg", "png"] = Field(
        default="jpeg", description="Visible frames as JPEG or PNG; thermal is always 16-bit PNG."
    )
    jpeg_quality: int = Field(default=92, ge=1, le=100, description="JPEG quality for visible frames.")
    qc_profile: str | None = Field(
        default=None,
        description="QC profile screening this stream (default by modality: booth-speech, camera-visible, camera-ir).",
    )
    redact_faces: bool = Field(
        default=False,
        description="Visible cameras: blur every face the CenterFace detector finds before the frame is encoded, so "
        "no unredacted frame reaches the disk or the broker; a frame the detector fails on is dropped and recorded "
        "(event redaction_failed), never written as it is.",
    )
    redact_min_score: float = Field(
        default=0.4,
        gt=0,
        lt=1,
        description="Detector score from which a face is blurred (redact_faces); lower blurs more, including some "
        "non-faces.",
    )
    pair_with: str | None = Field(
        default=None,
        description="Another camera (policy every, interval or triggered) this camera is paired with: for each "
        "frame that camera keeps, this one keeps its frame nearest in time (frame-counter-placed where the "
        "camera has one) and records the skew; this stream's own policy (every or interval) then keeps nothing "
        "by itself.",
    )


class StorageSettings(_Strict):
    """Local durability and disk use."""

    synchronous: Literal["full", "normal"] = Field(
        default="full",
        description="SQLite synchronous mode; 'full' survives power loss, 'normal' only process crashes.",
    )
    high_watermark_pct: float = Field(
        default=90.0, gt=0, le=100, description="Disk use above which confirmed media is evicted."
    )
    low_watermark_pct: float = Field(
        default=80.0, gt=0, le=100, description="Disk use eviction brings the disk back to."
    )
    queue_size: int = Field(
        default=64,
        ge=1,
        le=10000,
        description="Captures waiting to be written before new ones are dropped (and recorded as drops).",
    )
    check_interval_s: float = Field(
        default=5.0,
        ge=0.1,
        le=3600,
        description="Seconds between disk checks (eviction, pausing and resuming media); the writer also "
        "checks before each media file.",
    )

    @model_validator(mode="after")
    def _watermarks(self) -> StorageSettings:
        if self.low_watermark_pct >= self.high_watermark_pct:
            raise ValueError("low_watermark_pct must be below high_watermark_pct")
        return self


class DaemonSettings(_Strict):
    """How ``fieldcap run`` supervises its streams and talks to systemd."""

    stop_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="Longest a clean shutdown (flush segments, drain the writer, stop sync) may take; keep it "
        "below the unit's TimeoutStopSec.",
    )
    ready_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Longest wait for every device's first open attempt before telling systemd READY=1.",
    )
    restart_initial_s: float = Field(
        default=1.0, gt=0, le=3600, description="Wait before the first restart of a failed stream."
    )
    restart_max_s: float = Field(
        default=60.0, gt=0, le=86400, description="Cap of the doubling, jittered wait between stream restarts."
    )
    max_restarts: int = Field(
        default=10,
        ge=0,
        le=1_000_000,
        description="Restarts in a row before a stream is given up (alert event; SIGHUP re-arms it).",
    )
    restart_reset_s: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="A stream that delivered samples this long counts its restarts from zero again.",
    )
    status_interval_s: float = Field(
        default=5.0, ge=0.2, le=3600, description="Seconds between status file / systemd STATUS= updates."
    )
    heartbeat_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A loop silent this long is reported stalled; under a systemd watchdog WatchdogSec/2 is "
        "used instead.",
    )


class MetricsSettings(_Strict):
    """The Prometheus endpoint."""

    enabled: bool = Field(default=True, description="Serve Prometheus metrics over HTTP.")
    address: str = Field(
        default="127.0.0.1",
        description="Address to listen on; keep it on localhost and let a local collector scrape it.",
    )
    port: int = Field(default=9847, ge=0, le=65535, description="TCP port (0: any free port, see fieldcap status).")

    @model_validator(mode="after")
    def _address(self) -> MetricsSettings:
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(f"address {self.address!r} is not an IP address; use 127.0.0.1 or ::1") from None
        return self


class SessionDefaults(_Strict):
    """Session metadata used by the daemon's background sessions and the booth."""

    subject_key_file: str | None = Field(
        default=None,
        description="File holding the key that turns subject IDs into pseudonyms (HMAC-SHA256).",
    )
    operator: str = Field(default="", description="Operator name recorded with sessions.")


class Config(_Strict):
    """A whole agent configuration file."""

    agent: AgentSettings = Field(description="Device identity and data directory.")
    devices: list[DeviceSettings] = Field(default_factory=list, description="Devices to capture from.")
    capture: dict[str, CaptureSettings] = Field(
        default_factory=dict, description="Capture policy per device name; a default is used when absent."
    )
    storage: StorageSettings = Field(default_factory=StorageSettings, description="Local storage.")
    qc: QcSettings = Field(default_factory=QcSettings, description="QC profiles and models.")
    sync: SyncSettings = Field(default_factory=SyncSettings, description="Central sync.")
    session: SessionDefaults = Field(default_factory=SessionDefaults, description="Session defaults.")
    daemon: DaemonSettings = Field(default_factory=DaemonSettings, description="Stream supervision and systemd.")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus metrics endpoint.")

    @model_validator(mode="after")
    def _names(self) -> Config:
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ValueError(f"device name {device.name!r} is used twice; names must be unique")
            seen.add(device.name)
        for name in self.capture:
            if name not in seen:
                raise ValueError(f"[capture.{name}] names no device; known devices: {sorted(seen) or 'none'}")
        check_capture_policies(self)
        check_pairing(self)
        self._check_redaction()
        return self

    def _check_redaction(self) -> None:
        modality = {d.name: driver_modality(d.type) for d in self.devices}
        for name, cap in self.capture.items():
            if cap.redact_faces and modality[name] != "visible":
                raise ValueError(
                    f"capture.{name}.redact_faces: only a visible camera's frames can be redacted; {name!r} is"
                    f" {modality[name]}"
                )

    def capture_for(self, name: str) -> CaptureSettings:
        """The capture policy of a device, or the default for its modality."""
        if name in self.capture:
            return self.capture[name]
        device = next(d for d in self.devices if d.name == name)
        modality = driver_modality(device.type)
        if modality == "audio":
            return CaptureSettings(policy="segment")
        if modality == "sensor":
            return CaptureSettings(policy="readings")
        return CaptureSettings(policy="interval")


def _format_loc(loc: tuple[int | str, ...], data: Any) -> str:
    """Turn a pydantic error location into ``devices[1].uri``, dropping union tags."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # the discriminator's tag, not a key the user wrote
        out += f".{part}" if out else part
        node = node.get(part) if isinstance(node, dict) else None
    return out


def _problem(err: Any, data: Any, text: str | None) -> tuple[str, str, int | None]:
    """Key path, message (with a "did you mean" where one fits) and line of one validation error."""
    from agent.config_hints import did_you_mean, key_line, known_keys

    loc = tuple(err["loc"])
    key = _format_loc(loc, data)
    msg = err["msg"].removeprefix("Value error, ")
    path = _key_path(key)
    if err["type"] == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), known_keys(Config, loc))
        msg = f"unknown key; {hint}" if hint else "unknown key (check its spelling; see the configuration reference)"
    elif err["type"] == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        field, tag = str(ctx.get("discriminator", "type")).strip("'"), str(ctx.get("tag", ""))
        options = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        if key.startswith("devices"):
            options += list(available_drivers())
            what = "device type"
        else:
            what = field
        hint = did_you_mean(tag, options)
        msg = f"unknown {what} {tag!r}; " + (hint or f"known: {', '.join(sorted(set(options)))}")
        key, path = f"{key}.{field}", (*path, field)
    line = key_line(text, path) if text is not None else None
    return key, msg, line


def _key_path(key: str) -> tuple[int | str, ...]:
    """``devices[1].uri`` -> ``("devices", 1, "uri")``."""
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", key))


def parse_config(data: dict[str, Any], file: str = "<config>", text: str | None = None) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the first problem (and listing all).

    With ``text`` (the TOML source), each problem carries its line number.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        found = [_problem(err, data, text) for err in exc.errors(include_url=False)]
        problems = [{"file": file, "line": line, "key": key, "message": msg} for key, msg, line in found]
        key, msg, line = found[0]
        if len(found) > 1:
            msg += "".join(f"\n{file}{f':{ln}' if ln else ''}: {k}: {m}" for k, m, ln in found[1:])
        raise ConfigError(file, key, msg, line=line, problems=problems) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(file, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise ConfigError(file, "", f"not valid TOML: {exc}", line=line) from None
    return parse_config(data, file, text)


def resolve_secret(file: str, key: str, name: str) -> str:
    """Read a secret from a file, relative names resolved in ``$CREDENTIALS_DIRECTORY``.

    Trailing newlines are stripped because editors and ``echo`` add them.
    """
    path = Path(name)
    if not path.is_absolute():
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds:
            path = Path(creds) / path
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise ConfigError(
            file, key, f"secret file {str(path)!r} not found; create it (mode 0600) or fix the path"
        ) from None
    except OSError as exc:
        raise ConfigError(file, key, f"cannot read secret file {str(path)!r}: {exc.strerror}") from None


def check_secrets(config: Config, file: str) -> None:
    """Fail early, with the key path, on secret files that are missing."""
    sync = config.sync
    if sync.password_file:
        resolve_secret(file, "sync.password_file", sync.password_file)
    if sync.tls:
        for attr in ("ca_file", "cert_file", "key_file"):
            value = getattr(sync.tls, attr)
            if value:
                resolve_secret_path(file, f"sync.tls.{attr}", value)
    if sync.receipt_public_key:
        load_receipt_verifier(config, file)
    if config.session.subject_key_file:  # random bytes, not text: check only that the file is there
        resolve_secret_path(file, "session.subject_key_file", config.session.subject_key_file)


def load_receipt_verifier(config: Config, file: str) -> ReceiptVerifier | None:
    """The receipt public key of ``[sync]``, or None when none is configured; ConfigError if unusable."""
    from sync.signing import KeyFileError, ReceiptVerifier

    name = config.sync.receipt_public_key
    if not name:
        return None
    path = resolve_secret_path(file, "sync.receipt_public_key", name)
    try:
        return ReceiptVerifier.load(path)
    except KeyFileError as exc:
        raise ConfigError(file, "sync.receipt_public_key", str(exc)) from None


def config_warnings(config: Config) -> list[str]:
    """What is valid but unsafe: said by ``config validate`` and logged by the daemon at start."""
    out: list[str] = []
    if config.sync.enabled and not config.sync.receipt_public_key:
        out.append(
            "sync.receipt_public_key is not set: receipts are not checked, so anyone who can publish on this "
            "device's receipt topic can mark captures confirmed; confirmed media is therefore never evicted to free "
            "space. Set it to the ingesters' receipt-key.pub (`fieldcap central keygen`)"
        )
    if config.metrics.enabled and not ipaddress.ip_address(config.metrics.address).is_loopback:
        out.append(
            f"metrics.address {config.metrics.address} is not a loopback address: other machines can read the "
            "metrics; use 127.0.0.1 unless a firewall guards the port"
        )
    return out


def resolve_secret_path(file: str, key: str, name: str) -> Path:
    """The path of a credential file (for TLS files, which libraries open themselves)."""
    path = Path(name)
    if not path.is_absolute():
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds:
            path = Path(creds) / path
    if not path.is_file():
        raise ConfigError(file, key, f"credential file {str(path)!r} not found; create it or fix the path")
    return path
