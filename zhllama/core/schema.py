"""Option groups declared once, as dataclasses; CLI flags and YAML validation are derived from them.

A field's `metadata` carries what the CLI needs (the pattern of unsloth-cli and Axolotl):

- `help`: the `--help` text (required for every field shown on the command line);
- `flags`: the flag spellings, default `--field-name`;
- `required`: the flag must be given even though the dataclass has a default (e.g. `model`).

`option(default, help, ...)` builds such a field. This module imports neither Typer nor torch, so
core code can declare option groups without pulling in the CLI.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *flags: str,
    required: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with CLI metadata (`factory` for mutable defaults such as lists)."""
    metadata = {"help": help, "flags": flags, "required": required}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One command-line option derived from a dataclass field."""

    name: str
    annotation: Any
    default: Any
    help: str
    flags: tuple[str, ...]
    required: bool

    @property
    def is_list(self) -> bool:
        return typing.get_origin(_strip_optional(self.annotation)) is list


def _strip_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def field_specs(cls: type, exclude: tuple[str, ...] = ()) -> list[FieldSpec]:
    """The CLI options of a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in exclude or not f.init or "help" not in meta:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        flags = tuple(meta.get("flags") or ()) or (f"--{f.name.replace('_', '-')}",)
        required = bool(meta.get("required")) or default is dataclasses.MISSING
        specs.append(FieldSpec(f.name, hints[f.name], default, meta["help"], flags, required))
    return specs


def from_values(cls: type, values: dict[str, Any]) -> Any:
    """Build `cls` from option values; `None` for a list field means its default (Typer's empty list)."""
    kwargs = {}
    specs = {s.name: s for s in field_specs(cls)}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is not None and spec.is_list:
            value = list(value) if value else list(spec.default or [])
        kwargs[name] = value
    return cls(**kwargs)
