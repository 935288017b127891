"""`zhllama plugins`: every backend per entry-point group, and how to install what is missing."""

from __future__ import annotations

import typer

from zhllama.cli.options import examples
from zhllama.core import console, registry


def plugins() -> None:
    """List every plugin (templates, quantizers, engines, benchmarks), whether it is usable and how to install what is missing."""
    infos = [info for kind in registry.GROUPS for info in registry.describe(kind)]
    rows = []
    for info in infos:
        if info.load_error:
            status = f"broken: {info.load_error}"
        elif info.missing:
            status = f"missing {', '.join(info.missing)}: {info.install_hint}"
        else:
            status = "ok"
        rows.append((registry.GROUPS[info.group], info.name, info.distribution, status, info.description))
    console.emit(
        {
            "plugins": [
                {
                    "group": registry.GROUPS[i.group],
                    "name": i.name,
                    "target": i.target,
                    "distribution": i.distribution,
                    "description": i.description,
                    "requires": list(i.requires),
                    "missing": list(i.missing),
                    "available": i.available,
                    "install_hint": i.install_hint,
                    "load_error": i.load_error,
                }
                for i in infos
            ]
        },
        console.table("Plugins", ["group", "name", "from", "status", "description"], rows),
    )


def register(app: typer.Typer) -> None:
    app.command("plugins", epilog=examples("zhllama plugins", "zhllama --json plugins"))(plugins)
