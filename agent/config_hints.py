"""Where a config problem is and what was probably meant.

``key_line`` finds the line of a key path (``devices[1].fps``) in TOML text, ``did_you_mean``
proposes the closest known name for a misspelt key or device type, and ``known_keys`` lists the
keys a pydantic model accepts at a location.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any, get_args, get_origin

from pydantic import BaseModel

Path = tuple[int | str, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)]


def key_line(text: str, path: Path) -> int | None:
    """The 1-based line that sets ``path`` (or the closest enclosing table/key), else None."""
    table: list[int | str] = []
    arrays: dict[tuple[int | str, ...], int] = {}
    best: tuple[int, int] | None = None  # (matched length, line)
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names = _dotted(header.group(2))
            resolved: list[int | str] = []
            for name in names[:-1]:  # a parent that is an array of tables means its latest element
                resolved.append(name)
                if tuple(resolved) in arrays:
                    resolved.append(arrays[tuple(resolved)])
            resolved.append(names[-1])
            if header.group(1) == "[[":
                index = arrays.get(tuple(resolved), -1) + 1
                arrays[tuple(resolved)] = index
                resolved.append(index)
            table = resolved
            full: list[int | str] = table
        else:
            key = _KEY.match(line)
            if not key:
                continue
            full = [*table, *_dotted(key.group(1))]
        if tuple(full) == tuple(path):
            return number
        if len(full) <= len(path) and tuple(full) == tuple(path[: len(full)]) and (best is None or len(full) > best[0]):
            best = (len(full), number)
    return best[1] if best else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``"did you mean 'x'?"`` for the closest option, else ``""``."""
    close = difflib.get_close_matches(word, sorted(set(options)), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def _members(annotation: Any) -> Sequence[Any]:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _members(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _step(annotation: Any, part: int | str) -> Any:
    for member in _members(annotation):
        origin = get_origin(member)
        if isinstance(part, int) and origin in (list, tuple, Sequence):
            return get_args(member)[0]
        if isinstance(part, str) and origin is dict:
            return get_args(member)[1]
        if isinstance(member, type) and issubclass(member, BaseModel) and part in member.model_fields:
            return member.model_fields[str(part)].annotation
    # a discriminated union's tag: the member whose tag field has this literal value
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            for field in member.model_fields.values():
                if get_origin(field.annotation) is typing.Literal and part in get_args(field.annotation):
                    return member
    return None


def known_keys(model: type[BaseModel], loc: Path) -> list[str]:
    """The keys the model accepts where ``loc`` (a pydantic error location) points, or []."""
    node: Any = model
    for part in loc[:-1]:
        node = _step(node, part)
        if node is None:
            return []
    return [
        name
        for member in _members(node)
        if isinstance(member, type) and issubclass(member, BaseModel)
        for name in member.model_fields
    ]
