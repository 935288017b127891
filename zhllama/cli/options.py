"""Option declarations shared by several commands (declared once, reused everywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Force = Annotated[bool, typer.Option("--force", help="Replace an existing non-empty output.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (runs are deterministic by default).")]
ModelDir = Annotated[Path, typer.Option("--model", "-m", help="Model folder (HF layout).", show_default=False)]
OutputDir = Annotated[
    Path, typer.Option("--output", "-o", help="Output folder (written atomically).", show_default=False)
]


def examples(*lines: str) -> str:
    """Render an 'Examples' epilog for `--help` (Rich markup keeps the line breaks)."""
    body = "\n".join(f"  [cyan]{line}[/cyan]" for line in lines)
    return f"[bold]Examples[/bold]\n\n{body}"
