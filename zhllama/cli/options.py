"""Option declarations shared by several commands (declared once, reused everywhere)."""

from __future__ import annotations

from typing import Annotated

import typer

Force = Annotated[bool, typer.Option("--force", help="Replace an existing non-empty output.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (runs are deterministic by default).")]
Host = Annotated[str, typer.Option("--host", help="Address to bind (loopback unless you open it up).")]
Port = Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")]


def examples(*lines: str) -> str:
    """Render an 'Examples' epilog for `--help` (Rich markup keeps the line breaks)."""
    body = "\n".join(f"  [cyan]{line}[/cyan]" for line in lines)
    return f"[bold]Examples[/bold]\n\n{body}"
