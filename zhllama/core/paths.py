"""Input/output path rules shared by every command.

- `check_output(output, inputs)`: an output may never be, contain, or sit inside one of the
  command's inputs (paths resolved, symlinks followed, hard links compared by inode). This holds
  even with `--force`: replacing an output must never destroy what the command reads.
- `check_output_folder(output, inputs)`: the same guard for a results folder (eval `--output`),
  which must not be an existing file either.
- `read_text_file(path)` / `iter_text_lines(path)`: UTF-8 text inputs whose decoding errors are
  user errors naming the file and the byte offset, instead of a bare `UnicodeDecodeError`.
- `read_json(path, expect=dict)`: the one reader of a JSON file (configs, indexes, tokenizer files,
  benchmark tables), one wording for every failure: `PATH: no such file`, `PATH: not UTF-8 text
  (byte N: reason)`, `PATH: not valid JSON (line L, column C: msg)`, `PATH: expected a JSON object,
  got an array`; `parse_json_line(line, where)`: one line of a JSON-lines file, the same wording
  after `PATH:N` (`PATH:N: not valid JSON (column C: msg)`).
- `sha256_file(path)`: a file's sha256, read in 1 MiB chunks (manifests, cache keys).
"""

from __future__ import annotations

import hashlib
import json
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
    try:
        data = p.read_bytes()
    except OSError as exc:  # permission denied, a folder in a race, an I/O error
        raise UserError(f"{p}: cannot read ({exc.strerror or type(exc).__name__})") from None
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


_JSON_KINDS = {dict: "a JSON object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def _json_kind(kind: type) -> str:
    return _JSON_KINDS.get(kind, "a number")


def _check_kind(where: object, data, expect: type | None):
    if expect is not None and not isinstance(data, expect):
        raise UserError(f"{where}: expected {_json_kind(expect)}, got {_json_kind(type(data))}")
    return data


def parse_json_line(line: str, where: str, expect: type | None = dict):
    """One line of a JSON-lines file; `where` is `PATH:N`, named by every error."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON (column {exc.colno}: {exc.msg})") from None
    return _check_kind(where, data, expect)


def read_json(path: PathLike, expect: type | None = dict, optional: bool = False):
    """A JSON file's value; any failure is a one-line UserError naming the file (one wording for all).

    `expect`: the type the top-level value must have (dict: a JSON object, list: an array, None: any).
    `optional`: a path that is not a file reads as an empty `expect()` (None when `expect` is None).
    """
    p = Path(path)
    if optional and not p.is_file():
        return expect() if expect is not None else None
    text = read_text_file(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return _check_kind(p, data, expect)
