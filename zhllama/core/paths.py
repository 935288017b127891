"""Input/output path rules shared by every command.

- `check_output(output, inputs)`: an output may never be, contain, or sit inside one of the
  command's inputs (paths resolved, symlinks followed, hard links compared by inode). This holds
  even with `--force`: replacing an output must never destroy what the command reads.
- `check_output_folder(output, inputs)`: the same guard for a results folder (eval `--output`),
  which must not be an existing file either.
- `read_text_file(path)` / `iter_text_lines(path)`: UTF-8 text inputs whose decoding errors are
  user errors naming the file and the byte offset, instead of a bare `UnicodeDecodeError`.
- `sha256_file(path)`: a file's sha256, read in 1 MiB chunks (manifests, cache keys).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from zhllama.core.errors import UserError

PathLike = str | os.PathLike[str]


def _resolved(path: PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(output: PathLike, inputs: Iterable[PathLike | None], option: str = "--output") -> None:
    """Refuse an output that is, contains, or sits inside an existing input (even with --force).

    `inputs` may hold None (an option not given); inputs that do not exist are skipped (they are
    reported by the code that reads them), so a hub id such as `org/name` never matches by accident.
    """
    out = _resolved(output)
    for given in inputs:
        if given is None or not os.path.lexists(os.fspath(given)):
            continue
        source = _resolved(given)
        if out == source or _same_file(out, source):
            relation = "is"
        elif out in source.parents:
            relation = "contains"
        elif source in out.parents:
            relation = "sits inside"
        else:
            continue
        raise UserError(
            f"{option} {output}: the output {relation} the input {given}; an output must not be, contain or "
            "sit inside an input, writing it would destroy the input (choose another output path)"
        )


def check_output_folder(output: PathLike, inputs: Iterable[PathLike | None], option: str = "--output") -> None:
    """`check_output` for an output that is a folder: an existing file in its place is refused too."""
    from zhllama.core.atomic import check_parent

    path = Path(output)
    check_parent(path)
    if os.path.lexists(path) and not path.is_dir():
        raise UserError(f"{option} {output}: an existing file; it must be a results folder")
    check_output(output, inputs, option)


def sha256_file(path: PathLike) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decode_error(path: PathLike, offset: int, exc: UnicodeDecodeError) -> UserError:
    return UserError(f"{path}: not UTF-8 text (byte {offset + exc.start}: {exc.reason})")


def _check_text_file(path: PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder, expected a text file")
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if not p.is_file():
        raise UserError(f"{p}: not a regular file")
    return p


def read_text_file(path: PathLike) -> str:
    """The whole file as text; a missing file or non-UTF-8 bytes are a UserError naming the file."""
    p = _check_text_file(path)
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(p, 0, exc) from None


def iter_text_lines(path: PathLike) -> Iterator[str]:
    """Lines of a UTF-8 text file (without line ends), streamed; decoding errors name file and byte."""
    p = _check_text_file(path)
    offset = 0
    with open(p, "rb") as handle:
        for raw in handle:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _decode_error(p, offset, exc) from None
            offset += len(raw)
            yield line.rstrip("\r\n")
