"""Where output goes: results on stdout (Rich table or `--json`), logs and progress on stderr.

The global flags `--json`, `--quiet` and `--debug` set `SETTINGS` once per invocation; library
code asks this module for a progress bar or a log line and never prints on its own.

When a command fails, stderr must hold only its one error line. So while a command runs with
stderr not a terminal, log and warning lines are *held*: they are written when the command
succeeds (`end_command(True)`) or once they have waited `HOLD_SECONDS` (a long job's log still
streams), and dropped when it fails sooner. On a terminal they show at once, and a progress bar
is cleared when its block fails.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.errors import MarkupError
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

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

HOLD_SECONDS = 10.0


class _Held:
    """Log lines waiting for the command to start real work (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False
        self.depth = 0  # nested commands (`zhllama demo` runs the others in-process) share one hold
        self.lines: list[str] = []
        self.timer: threading.Timer | None = None
        self.lock = threading.RLock()


_HELD = _Held()


def begin_command() -> None:
    """Start holding log lines (only when stderr is not a terminal; `--debug` shows all at once)."""
    with _HELD.lock:
        _HELD.depth += 1
        if _HELD.depth == 1:
            _HELD.lines.clear()
            _HELD.active = not stderr.is_terminal and not SETTINGS.debug


def release_held() -> None:
    """Write the held lines and stop holding: the command is past its checks."""
    with _HELD.lock:
        _HELD.active = False
        if _HELD.timer is not None:
            _HELD.timer.cancel()
            _HELD.timer = None
        lines, _HELD.lines = _HELD.lines, []
        for line in lines:
            _print(line)


def end_command(ok: bool) -> None:
    """Release the held lines after success; drop them after a failure (only the error line remains).

    Only the outermost command settles them."""
    with _HELD.lock:
        _HELD.depth = max(0, _HELD.depth - 1)
        if _HELD.depth:
            return
        if not ok:
            _HELD.lines.clear()
        release_held()


def _print(line: str) -> None:
    """Print a log line as Rich markup; a line whose brackets are not valid markup (a path such as
    `data/[/x]`) is printed as plain text rather than failing the command."""
    try:
        stderr.print(line)
    except MarkupError:
        stderr.print(line, markup=False)


def _say(line: str) -> None:
    with _HELD.lock:
        if not _HELD.active:
            _print(line)
            return
        _HELD.lines.append(line)
        if _HELD.timer is None:
            _HELD.timer = threading.Timer(HOLD_SECONDS, release_held)
            _HELD.timer.daemon = True
            _HELD.timer.start()


def log(message: str) -> None:
    """An informational line on stderr (silenced by `--quiet`)."""
    if not SETTINGS.quiet:
        _say(message)


def warn(message: str) -> None:
    """A warning on stderr; shown even with `--quiet` because it may change results."""
    _say(f"[yellow]zhllama: warning:[/yellow] {escape(message)}")  # paths may hold brackets


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
    """Yield an `advance(n=1)` callable bound to a fresh progress bar (cleared if the block fails)."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        try:
            yield lambda n=1, **fields: progress.update(task, advance=n, **fields)
        except BaseException:
            progress.live.transient = True
            raise


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
