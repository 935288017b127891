"""Atomic outputs: write into a temporary sibling, rename into place only on success.

An interrupted or failed job therefore leaves no half-written output, and an existing
result is never clobbered unless the user passed `--force`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zhllama.core.errors import UserError


def check_output_dir(path: Path, force: bool) -> None:
    """Refuse an existing non-empty output directory (or a file in its place) unless forced."""
    if path.is_file():
        raise UserError(f"{path}: output path is an existing file")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise UserError(f"{path}: output directory exists and is not empty (use --force to replace it)")


@contextmanager
def atomic_dir(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one rename."""
    final = Path(path)
    check_output_dir(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, trash / final.name)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextmanager
def atomic_file(path: str | os.PathLike[str], force: bool = True, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary sibling file for writing; it is renamed onto `path` when the block succeeds."""
    final = Path(path)
    if final.exists() and not force:
        raise UserError(f"{final}: output file exists (use --force to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


@contextmanager
def atomic_path(path: str | os.PathLike[str], force: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling *path* (for libraries that write files themselves)."""
    final = Path(path)
    if final.exists() and not force:
        raise UserError(f"{final}: output file exists (use --force to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
