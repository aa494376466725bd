"""Regenerate the configuration and CLI references in README.md from the code.

The pydantic models and click commands are the single source of truth: every field's description
and every command's help text is written once, in the code. ``tests/agent/test_docs.py`` fails
when README.md is out of date.

    .venv/bin/python scripts/readme_reference.py          # rewrite README.md
    .venv/bin/python scripts/readme_reference.py --check  # exit 1 if it would change
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_name(a) for a in get_args(annotation) if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is not None:
            return "(see section)" if isinstance(field.default_factory, type) else "`[]`/`{}`"
        return "**required**"
    value = field.default
    if isinstance(value, BaseModel):
        return "(see section)"
    if isinstance(value, Path):
        return f'`"{value}"`'
    if value is None:
        return "none"
    return f"`{value!r}`".replace("'", '"')


def _is_model(annotation: Any) -> type[BaseModel] | None:
    for a in (annotation, *get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def model_table(model: type[BaseModel], prefix: str, out: list[str], nested: list[tuple[str, type[BaseModel]]]) -> None:
    out.append("| key | type | default | description |")
    out.append("|---|---|---|---|")
    for name, field in model.model_fields.items():
        sub = _is_model(field.annotation)
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        if sub is not None and get_origin(field.annotation) is not list:
            nested.append((f"{prefix}.{name}" if prefix else name, sub))


def config_reference() -> str:
    from agent.config import Config
    from drivers.settings import DeviceSettings

    out: list[str] = []
    for name, field in Config.model_fields.items():
        if name == "devices":
            continue
        sub = _is_model(field.annotation)
        if name == "capture":
            from agent.config import CaptureSettings

            out.append("\n### `[capture.DEVICE]`\n")
            out.append((field.description or "") + "\n")
            model_table(CaptureSettings, "capture.DEVICE", out, [])
            continue
        if sub is None:
            continue
        queue: list[tuple[str, type[BaseModel]]] = [(name, sub)]
        while queue:
            path, model = queue.pop(0)
            out.append(f"\n### `[{path}]`\n")
            doc = (model.__doc__ or "").strip().splitlines()
            if doc:
                out.append(doc[0] + "\n")
            model_table(model, path, out, queue)
    out.append("\n### `[[devices]]` — one table per device, chosen by `type`\n")
    union = (
        get_args(get_args(DeviceSettings)[0])
        if get_origin(DeviceSettings) is typing.Annotated
        else get_args(DeviceSettings)
    )
    for model in union:
        type_field = model.model_fields["type"]
        (driver,) = get_args(type_field.annotation)
        out.append(f'\n#### `type = "{driver}"`\n')
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            out.append(doc[0] + "\n")
        model_table(model, "devices", out, [])
    return "\n".join(out).strip() + "\n"


def cli_reference() -> str:
    from agent.cli import _register_subsystems, cli

    _register_subsystems()
    out: list[str] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], [*path, name])
            return
        ctx = click.Context(cmd, info_name=" ".join(path))
        usage = " ".join(cmd.collect_usage_pieces(ctx))
        out.append(f"\n### `{' '.join(path)}`\n")
        out.append(f"`{' '.join(path)} {usage}`\n")
        out.append((cmd.help or "").strip().split("\n\n")[0].replace("\n", " ") + "\n")
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                opts = ", ".join(f"`{o}`" for o in param.opts)
                out.append(f"- {opts}: {(param.help or '').strip()}")
        out.append("")

    walk(cli, ["fieldcap"])
    return "\n".join(out).strip() + "\n"


def replace(text: str, marker: str, body: str) -> str:
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    head, rest = text.split(start, 1)
    _old, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def main() -> int:
    text = README.read_text()
    new = replace(text, "config-reference", config_reference())
    new = replace(new, "cli-reference", cli_reference())
    if "--check" in sys.argv:
        if new != text:
            print("README.md is out of date: run .venv/bin/python scripts/readme_reference.py")  # noqa: T201
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
