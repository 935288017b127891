"""Plugin registry over Python entry points.

Every backend kind has one entry-point group (see `GROUPS`). An entry point names a class that
subclasses the kind's base class from `zhllama.core.plugin_api` (the contract of each kind is
documented there) and declares:

- `name`: the name users type (should equal the entry-point name),
- `description`: one line for `zhllama plugins`,
- `requires`: importable module names it needs (checked without importing them),
- `install_hint`: how to install what is missing, e.g. `pip install 'zhllama[gguf]'`.

Built-in backends are declared in zhllama's own `pyproject.toml` exactly like third-party
ones, so there is one discovery path. Loading a plugin module must stay cheap: heavy imports
belong inside its methods.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from zhllama.core.errors import MissingDependencyError, UserError, unknown_choice
from zhllama.core.plugin_api import base_class

GROUPS: dict[str, str] = {
    "quantizers": "zhllama.quantizers",
    "engines": "zhllama.engines",
    "benchmarks": "zhllama.benchmarks",
    "templates": "zhllama.templates",
}


@dataclass(frozen=True)
class PluginInfo:
    """What `zhllama plugins` shows for one entry point."""

    group: str
    name: str
    target: str
    distribution: str
    description: str
    requires: tuple[str, ...]
    missing: tuple[str, ...]
    install_hint: str
    load_error: str | None = None

    @property
    def available(self) -> bool:
        return self.load_error is None and not self.missing


def missing_modules(modules: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The modules among `modules` that cannot be imported (found without importing them)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return tuple(missing)


def _group_name(kind: str) -> str:
    if kind not in GROUPS:
        raise unknown_choice("plugin kind", kind, GROUPS)
    return GROUPS[kind]


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=_group_name(kind)):
        found.setdefault(ep.name, ep)  # first on sys.path wins, as for imports
    return found


def names(kind: str) -> list[str]:
    return sorted(_entry_points(kind))


def describe(kind: str) -> list[PluginInfo]:
    """Information on every plugin of a kind, including ones that fail to load."""
    infos = []
    for name, ep in sorted(_entry_points(kind).items()):
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            obj = ep.load()
            _check_base(kind, name, ep, obj)
        except Exception as exc:  # a broken third-party plugin must not break the listing
            infos.append(PluginInfo(kind, name, ep.value, dist, "", (), (), "", f"{type(exc).__name__}: {exc}"))
            continue
        requires = tuple(getattr(obj, "requires", ()))
        infos.append(
            PluginInfo(
                group=kind,
                name=name,
                target=ep.value,
                distribution=dist,
                description=getattr(obj, "description", ""),
                requires=requires,
                missing=missing_modules(requires),
                install_hint=getattr(obj, "install_hint", ""),
            )
        )
    return infos


def _check_base(kind: str, name: str, ep: EntryPoint, obj: Any) -> None:
    base = base_class(kind)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise UserError(f"{kind} plugin '{name}' ({ep.value}) is not a subclass of {base.__name__}")


def load(kind: str, name: str, check_requirements: bool = True) -> Any:
    """Load the plugin object `name` of `kind`; unknown names and missing extras are user errors."""
    eps = _entry_points(kind)
    if name not in eps:
        raise unknown_choice(kind.rstrip("s"), name, eps)
    try:
        obj = eps[name].load()
    except Exception as exc:
        raise UserError(f"{kind} plugin '{name}' ({eps[name].value}) failed to load: {exc}") from exc
    _check_base(kind, name, eps[name], obj)
    if check_requirements:
        missing = missing_modules(tuple(getattr(obj, "requires", ())))
        if missing:
            hint = getattr(obj, "install_hint", "") or f"pip install {' '.join(missing)}"
            raise MissingDependencyError(
                f"{kind} plugin '{name}' needs {', '.join(missing)}, which is not installed; install it with: {hint}"
            )
    return obj
