"""``fieldcap devices probe|drivers``: what this machine has and which driver types exist."""

from __future__ import annotations

from typing import Any

import click

from agent.cli.common import echo_json, json_option

__all__ = ["devices_group"]


@click.group("devices")
def devices_group() -> None:
    """Find the cameras, microphones and serial sensors this machine has."""


def _modes(cam: dict[str, Any]) -> str:
    parts = []
    for fmt in cam.get("formats", []):
        sizes = [
            f"{m['width']}x{m['height']}" + (f"@{max(m['fps']):g}" if m.get("fps") else "")
            for m in fmt["modes"]
            if isinstance(m["width"], int)
        ]
        parts.append(f"{fmt['fourcc'].strip()}: {' '.join(sizes[:6]) or 'any size'}")
    return "; ".join(parts)


@devices_group.command("probe")
@json_option("Print one JSON object instead of text.")
def probe(as_json: bool) -> None:
    """List cameras (/dev/video*), audio inputs and serial ports, with what each supports."""
    from drivers.probe import probe_all

    found = probe_all()
    if as_json:
        echo_json(found, indent=2)
        return
    click.echo("Cameras:")
    for cam in found["cameras"] or [{"path": "(none)"}]:
        if "error" in cam:
            click.echo(f"  {cam['path']}: cannot query: {cam['error']}")
        elif "card" in cam:
            kind = _modes(cam) if cam["capture"] else "no capture (metadata node)"
            click.echo(f"  {cam['path']}: {cam['card']} [{cam['driver']}] {kind}")
        else:
            click.echo(f"  {cam['path']}")
    click.echo("Audio inputs:")
    for dev in found["audio"] or [{"name": "(none)"}]:
        if "error" in dev:
            click.echo(f"  {dev['error']}")
        elif "index" in dev:
            click.echo(
                f"  {dev['index']}: {dev['name']} ({dev['hostapi']}, up to "
                f"{dev['max_input_channels']} ch, default {dev['default_samplerate']:g} Hz)"
            )
        else:
            click.echo(f"  {dev['name']}")
    click.echo("Serial ports:")
    for port in found["serial"] or [{"device": "(none)"}]:
        extra = f" -> use {port['stable_path']}" if port.get("stable_path") else ""
        desc = f": {port['description']}" if port.get("description") else ""
        click.echo(f"  {port['device']}{desc}{extra}")


@devices_group.command("drivers")
@json_option("One JSON object per driver per line.")
def list_drivers(as_json: bool) -> None:
    """List the driver types usable in ``[[devices]]`` (built-in and plug-in)."""
    from drivers.registry import available_drivers, driver_modality

    for name, (module, cls) in sorted(available_drivers().items()):
        try:
            modality = driver_modality(name)
        except Exception as exc:
            modality = f"unavailable: {exc}"
        if as_json:
            echo_json({"type": name, "modality": modality, "class": f"{module}:{cls}"})
        else:
            click.echo(f"{name:16} {modality:8} {module}:{cls}")
