"""Prompt scripts: what a subject reads, item by item, read from TSV, CSV or JSON.

A script is a list of items with an id, the text to read, a type (``character``, ``word``,
``phrase``, ``sentence``, ``paragraph`` or any short label of your own), optional instructions for
the subject and an optional longest take (``max_duration``, seconds). TSV and CSV files may start
with a header naming these columns (in any order; ``id``/``item``, ``text``/``prompt``,
``type``/``kind``, ``instructions``/``note``, ``max_duration``/``max_s``); without one the columns
are taken in that order. Blank lines and lines starting with ``#`` are ignored. JSON is a list of
objects with the same keys, or ``{"items": [...]}``.

Every mistake is reported as ``FILE:LINE: what is wrong`` (``FILE: items[N]: ...`` for JSON), so
that the person who wrote the script can fix it before a subject sits in the booth.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.errors import FieldcapError

__all__ = ["PromptItem", "Script", "ScriptError", "load_script", "parse_script"]

COLUMNS = ("id", "text", "type", "instructions", "max_duration")
ALIASES = {
    "id": "id",
    "item": "id",
    "item_id": "id",
    "itemid": "id",
    "text": "text",
    "prompt": "text",
    "type": "type",
    "kind": "type",
    "instructions": "instructions",
    "instruction": "instructions",
    "note": "instructions",
    "notes": "instructions",
    "max_duration": "max_duration",
    "max_duration_s": "max_duration",
    "max_s": "max_duration",
    "max duration": "max_duration",
    "duration": "max_duration",
}
# The longest take by item type when the script gives none: a few seconds of lead-in and tail
# around the time a slow reader needs.
DEFAULT_MAX_S = {"character": 6.0, "syllable": 6.0, "word": 6.0, "phrase": 10.0, "sentence": 20.0, "paragraph": 90.0}
FALLBACK_MAX_S = 20.0
MAX_TAKE_S = 600.0
ID_PATTERN = re.compile(r"^[^\s/\\][^\t\r\n/\\]{0,127}$")
TYPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_ITEMS_BYTES = 512 * 1024  # the items travel in the session record (records are capped at 1 MiB)


class ScriptError(FieldcapError):
    """A prompt script that cannot be used; the message points at the file and line."""


@dataclass(frozen=True, slots=True)
class PromptItem:
    """One prompt: what the subject reads and how long a take of it may last."""

    item_id: str
    text: str
    type: str = "prompt"
    instructions: str = ""
    max_duration_s: float = FALLBACK_MAX_S

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptItem:
        return cls(
            item_id=str(data["item_id"]),
            text=str(data["text"]),
            type=str(data.get("type") or "prompt"),
            instructions=str(data.get("instructions") or ""),
            max_duration_s=float(data.get("max_duration_s") or FALLBACK_MAX_S),
        )


@dataclass(frozen=True, slots=True)
class Script:
    """A parsed script: its items in order, the file's name and the sha256 of its bytes."""

    name: str
    sha256: str
    items: tuple[PromptItem, ...]

    def item(self, item_id: str) -> PromptItem | None:
        return next((i for i in self.items if i.item_id == item_id), None)


def load_script(path: str | Path) -> Script:
    """Read and check a script file (format from the extension, else sniffed from the content)."""
    file = str(path)
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ScriptError(f"{file}: script not found (give the path of a .tsv, .csv or .json prompt script)") from None
    except IsADirectoryError:
        raise ScriptError(f"{file}: is a directory; give a .tsv, .csv or .json prompt script") from None
    except OSError as exc:
        raise ScriptError(f"{file}: cannot read the script: {exc.strerror}") from None
    return parse_script(raw, name=p.name, file=file)


def parse_script(raw: bytes, *, name: str, file: str | None = None) -> Script:
    """Parse script bytes; ``name`` (its file name) decides the format, else the content does."""
    where = file or name
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ScriptError(f"{where}:{line}: not UTF-8 text (byte {exc.start}); save the script as UTF-8") from None
    fmt = _format_of(name, text)
    items = _parse_json(text, where) if fmt == "json" else _parse_rows(text, where, "\t" if fmt == "tsv" else ",")
    if not items:
        raise ScriptError(f"{where}: the script has no prompt items")
    size = len(json.dumps([i.to_dict() for i in items], ensure_ascii=False).encode())
    if size > MAX_ITEMS_BYTES:
        raise ScriptError(
            f"{where}: the script's {len(items)} items take {size // 1024} KiB; split it into scripts of at most"
            f" {MAX_ITEMS_BYTES // 1024} KiB (one per session)"
        )
    return Script(name=name, sha256=hashlib.sha256(raw).hexdigest(), items=tuple(items))


def _format_of(name: str, text: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    head = text.lstrip()
    if head.startswith(("[", "{")):
        return "json"
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    return "tsv" if "\t" in first or "," not in first else "csv"


def _parse_rows(text: str, where: str, delimiter: str) -> list[PromptItem]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, strict=True)
    columns: tuple[str, ...] | None = None
    items: list[PromptItem] = []
    seen: dict[str, str] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                continue
            if columns is None:
                header = _header(row, where, line)
                if header is not None:
                    columns = header
                    continue
                columns = COLUMNS
            if len(row) > len(columns):
                raise ScriptError(
                    f"{where}:{line}: {len(row)} columns, but the script has {len(columns)}"
                    f" ({', '.join(columns)}); quote text that contains the separator"
                )
            fields = {col: row[i] for i, col in enumerate(columns) if i < len(row)}
            items.append(_item(fields, f"{where}:{line}", seen, f"line {line}"))
    except csv.Error as exc:
        raise ScriptError(f"{where}:{reader.line_num}: {exc}") from None
    return items


def _header(row: list[str], where: str, line: int) -> tuple[str, ...] | None:
    """The column order if ``row`` is a header, else None."""
    names = [cell.strip().lower() for cell in row]
    known = [ALIASES.get(n) for n in names]
    if not any(k in ("id", "text") for k in known[:2]):
        return None
    unknown = [row[i] for i, k in enumerate(known) if k is None]
    if unknown:
        raise ScriptError(
            f"{where}:{line}: unknown column(s) {', '.join(repr(u) for u in unknown)} in the header;"
            f" known: {', '.join(COLUMNS)}"
        )
    cols = tuple(k for k in known if k is not None)
    for col in ("id", "text"):
        if col not in cols:
            raise ScriptError(f"{where}:{line}: the header has no {col!r} column")
    doubled = sorted({c for c in cols if cols.count(c) > 1})
    if doubled:
        raise ScriptError(f"{where}:{line}: column {doubled[0]!r} appears twice in the header")
    return cols


def _parse_json(text: str, where: str) -> list[PromptItem]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScriptError(f"{where}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(data, dict):
        if "items" not in data:
            raise ScriptError(f"{where}: a JSON script is a list of items or an object with an 'items' list")
        data = data["items"]
    if not isinstance(data, list):
        raise ScriptError(f"{where}: 'items' must be a list of objects")
    items: list[PromptItem] = []
    seen: dict[str, str] = {}
    for n, entry in enumerate(data):
        loc = f"{where}: items[{n}]"
        if not isinstance(entry, dict):
            raise ScriptError(f"{loc}: each item must be an object with at least 'id' and 'text'")
        fields: dict[str, str] = {}
        for key, value in entry.items():
            col = ALIASES.get(str(key).strip().lower())
            if col is None:
                raise ScriptError(f"{loc}: unknown key {key!r}; known: {', '.join(COLUMNS)}")
            if isinstance(value, bool) or (value is not None and not isinstance(value, str | int | float)):
                raise ScriptError(f"{loc}: {key!r} must be text or a number")
            fields[col] = "" if value is None else str(value)
        items.append(_item(fields, loc, seen, f"items[{n}]"))
    return items


def _item(fields: Mapping[str, str], loc: str, seen: dict[str, str], label: str) -> PromptItem:
    item_id = fields.get("id", "").strip()
    text = " ".join(fields.get("text", "").split())
    if not item_id:
        raise ScriptError(f"{loc}: the item has no id; give every item a unique id (e.g. 'digits-007')")
    if not ID_PATTERN.match(item_id):
        raise ScriptError(f"{loc}: item id {item_id!r} has a tab, slash or line break, or is over 128 characters")
    if item_id in seen:
        first = seen[item_id]
        raise ScriptError(f"{loc}: item id {item_id!r} is used twice (first at {first}); ids must be unique")
    if not text:
        raise ScriptError(f"{loc}: item {item_id!r} has no text to read")
    kind = fields.get("type", "").strip().lower() or "prompt"
    if not TYPE_PATTERN.match(kind):
        raise ScriptError(
            f"{loc}: item {item_id!r}: type {kind!r} must be a short label of letters, digits, '-' or '_'"
            " (e.g. character, word, phrase, sentence)"
        )
    max_s = _duration(fields.get("max_duration", ""), loc, item_id, kind)
    seen[item_id] = label
    return PromptItem(item_id, text, kind, " ".join(fields.get("instructions", "").split()), max_s)


def _duration(value: str, loc: str, item_id: str, kind: str) -> float:
    value = value.strip().lower().removesuffix("s").strip()
    if not value:
        return DEFAULT_MAX_S.get(kind, FALLBACK_MAX_S)
    try:
        seconds = float(value)
    except ValueError:
        raise ScriptError(
            f"{loc}: item {item_id!r}: max duration {value!r} is not a number of seconds (e.g. 10 or 12.5)"
        ) from None
    if not math.isfinite(seconds) or not 0.5 <= seconds <= MAX_TAKE_S:
        raise ScriptError(f"{loc}: item {item_id!r}: max duration {seconds:g} s is outside 0.5..{MAX_TAKE_S:g} s")
    return seconds


def items_from_meta(meta: Mapping[str, Any]) -> list[PromptItem]:
    """The items a booth session stored in its metadata (empty when it has none)."""
    raw: Iterable[Any] = meta.get("items") or ()
    return [PromptItem.from_dict(d) for d in raw if isinstance(d, dict)]
