"""Where output goes: results on stdout (Rich table or `--json`), logs and progress on stderr.

The global flags `--json`, `--quiet` and `--debug` set `SETTINGS` once per invocation; library
code asks this module for a progress bar or a log line and never prints on its own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


@dataclass
class Settings:
    json: bool = False
    quiet: bool = False
    debug: bool = False


SETTINGS = Settings()

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)


def log(message: str) -> None:
    """An informational line on stderr (silenced by `--quiet`)."""
    if not SETTINGS.quiet:
        stderr.print(message)


def warn(message: str) -> None:
    """A warning on stderr; shown even with `--quiet` because it may change results."""
    stderr.print(f"[yellow]zhllama: warning:[/yellow] {message}")


def progress_enabled() -> bool:
    return not SETTINGS.quiet and stderr.is_terminal


def make_progress(*extra_columns: Any) -> Progress:
    """A Rich progress bar on stderr, disabled under `--quiet` or when stderr is not a TTY."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not progress_enabled(),
        transient=False,
    )


@contextmanager
def progress_task(description: str, total: int | None) -> Iterator[Any]:
    """Yield an `advance(n=1)` callable bound to a fresh progress bar."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1, **fields: progress.update(task, advance=n, **fields)


def track(items: Iterable[Any], description: str, total: int | None = None) -> Iterator[Any]:
    """Iterate with a progress bar (a no-op wrapper when progress is off)."""
    if total is None and isinstance(items, Sequence):
        total = len(items)
    with progress_task(description, total) as advance:
        for item in items:
            yield item
            advance()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A results table; numbers are right-aligned and floats shown with 4 significant digits."""
    t = Table(title=title, title_justify="left")
    materialised = [list(r) for r in rows]
    for i, name in enumerate(columns):
        numeric = bool(materialised) and all(isinstance(r[i], (int, float)) for r in materialised)
        t.add_column(name, justify="right" if numeric else "left")
    for row in materialised:
        t.add_row(*(_fmt(v) for v in row))
    return t


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e3 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return escape(str(value))


def emit(result: Mapping[str, Any], *renderables: Any) -> None:
    """Print a command's result: JSON on stdout with `--json`, otherwise the Rich renderables."""
    if SETTINGS.json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2, default=str) + "\n")
        sys.stdout.flush()
        return
    for renderable in renderables:
        stdout.print(renderable)
