"""Foxglove JSON schemas shared by the two MCAP writers (local sessions and central exports)."""

from __future__ import annotations

from typing import Any

TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}},
}
COMPRESSED_IMAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "timestamp": TIME_SCHEMA,
        "frame_id": {"type": "string"},
        "data": {"type": "string", "contentEncoding": "base64"},
        "format": {"type": "string"},
    },
}
