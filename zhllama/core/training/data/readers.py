"""Data files and the documents and records in them, read as a stream and validated in the same pass
(every error names the file and the line or record)."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.paths import parse_json_line
from zhllama.core.templates import Message

TEXT_SUFFIXES = (".txt", ".jsonl")
RECORD_SUFFIXES = (".json", ".jsonl")


def expand_files(
    paths: Iterable[str | Path], suffixes: tuple[str, ...], refuse: dict[str, str] | None = None
) -> list[Path]:
    """Files named, plus the `suffixes` files found (recursively, sorted) in folders named.

    `refuse` maps a suffix to the reason a file named explicitly with it cannot be read.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in suffixes)
            if not found:
                raise UserError(f"{p}: folder holds no {'/'.join(suffixes)} files")
            files += found
        elif p.is_file():
            if refuse and p.suffix in refuse:
                raise UserError(f"{p}: {refuse[p.suffix]}")
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    if not files:
        raise UserError("--data: give at least one data file")
    return files


def utf8_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, text without the newline, bytes) for each line; non-UTF-8 is a UserError."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8"), len(raw)
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{n}: not UTF-8 text") from exc


def split_lines(line: str) -> list[str]:
    r"""One line as read from a file (ending in '\n' or at the end of the file), split into lines
    as `datasets`' `text` loader splits a file: only '\n', '\r\n' and a lone '\r' end a line
    (universal newlines); U+2028, U+2029, '\x85', '\x0b', '\x0c', '\x1c'-'\x1e' stay inside it."""
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    return line.split("\r")


def iter_documents(path: Path, keep_blank: bool = False) -> Iterator[tuple[str, int]]:
    r"""(document, bytes read) for a .txt (one per line) or .jsonl (`text` field) file.

    Lines split as `datasets`' `text` loader does (`split_lines`: '\n', '\r\n', '\r' only);
    blank lines are skipped unless `keep_blank` (CLA2's `text` loader keeps them).
    """
    jsonl = path.suffix == ".jsonl"
    for n, line, size in utf8_lines(path):
        if jsonl:
            if not line.strip():
                yield None, size
                continue
            record = parse_json_line(line, f"{path}:{n}", expect=None)
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise UserError(f"{path}:{n}: record has no string field 'text'")
            yield record["text"], size
            continue
        first = True
        for piece in split_lines(line):
            if keep_blank or piece.strip():
                yield piece, size if first else 0
            elif first:
                yield None, size
            first = False


def chunks(docs: Iterator[tuple[str | None, int]], chunk_bytes: int) -> Iterator[tuple[list[str], int]]:
    batch: list[str] = []
    size = 0
    for doc, n in docs:
        size += n
        if doc is not None:
            batch.append(doc)
        if size >= chunk_bytes:
            yield batch, size
            batch, size = [], 0
    if batch or size:
        yield batch, size


ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def iter_json_array(path: Path, read_size: int = 1 << 20) -> Iterator[tuple[int, object, int]]:
    """(index, record, bytes read) of a JSON array file, decoded one element at a time."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, eof, consumed_lines, consumed_columns = "", 0, False, 0, 0

    def more(fh) -> bool:
        nonlocal buf, pos, eof, consumed_lines, consumed_columns
        if eof:
            return False
        raw = fh.read(read_size)
        try:
            text = utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text") from exc
        dropped = buf[:pos]
        consumed_lines += dropped.count("\n")
        newline = dropped.rfind("\n")
        consumed_columns = len(dropped) - newline - 1 if newline >= 0 else consumed_columns + len(dropped)
        buf, pos = buf[pos:] + text, 0
        eof = not raw
        return True

    def malformed(msg: str, at: int | None = None):
        """The one wording of `paths.read_json`, at `at` (an index into `buf`; default: `pos`)."""
        at = pos if at is None else at
        line = consumed_lines + buf.count("\n", 0, at) + 1
        newline = buf.rfind("\n", 0, at)
        column = at - newline if newline >= 0 else consumed_columns + at + 1
        return UserError(f"{path}: not valid JSON (line {line}, column {column}: {msg})")

    def skip_ws(fh) -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more(fh):
                return ""

    with open(path, "rb") as fh:
        first = skip_ws(fh)
        if first == "":
            raise malformed("Expecting value")
        if first != "[":
            try:  # a complete JSON value that is not an array, or not JSON at all
                while more(fh):
                    pass
                json.loads(buf[pos:])
            except json.JSONDecodeError as exc:
                raise malformed(exc.msg, pos + exc.pos) from exc
            raise UserError(f"{path}: expected a JSON array of records")
        pos += 1
        index, last = 0, 0
        if skip_ws(fh) == "]":
            pos += 1
        else:
            while True:
                skip_ws(fh)
                while True:
                    try:
                        value, end = decoder.raw_decode(buf, pos)
                        if end == len(buf) and not eof and isinstance(value, (int, float)):
                            raise json.JSONDecodeError("number may continue", buf, end)
                        break
                    except json.JSONDecodeError as exc:
                        if not more(fh):
                            raise malformed(exc.msg, exc.pos) from exc
                pos = end
                done = fh.tell()
                yield index, value, done - last
                last = done
                index += 1
                sep = skip_ws(fh)
                if sep == ",":
                    pos += 1
                    continue
                if sep == "]":
                    pos += 1
                    break
                raise malformed("Expecting ',' delimiter")  # json.loads's words, at the same place
        if skip_ws(fh) != "":
            raise malformed("Extra data")


def iter_records(path: Path) -> Iterator[tuple[int, object, int]]:
    """(index, record, bytes) of an Alpaca JSON array or a JSONL file, streamed."""
    if path.suffix != ".jsonl":
        yield from iter_json_array(path)
        return
    index = 0
    for _, line, size in utf8_lines(path):
        for piece in split_lines(line):  # a raw U+2028 inside a JSON string is not a line break
            if piece.strip():
                yield index, parse_json_line(piece, f"{path}: record {index}", expect=None), size
            else:
                yield index, None, size
            size = 0
            index += 1


def record_messages(source: str, index: int, record) -> list[Message]:
    """Alpaca (`instruction`, `input`, `output`) or multi-turn (`conversations` / `messages`)."""
    where = f"{source}: record {index}"
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a JSON object")
    turns = record.get("conversations", record.get("messages"))
    if turns is not None:
        if not isinstance(turns, list) or not turns:
            raise UserError(f"{where}: 'conversations' must be a non-empty list")
        messages = []
        for t, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise UserError(f"{where}: turn {t} is not a JSON object")
            role = ROLE_NAMES.get(str(turn.get("from", turn.get("role"))))
            content = turn.get("value", turn.get("content"))
            if role is None or not isinstance(content, str):
                raise UserError(f"{where}: turn {t} needs a role (from/role) and text (value/content)")
            messages.append(Message(role, content))
        if messages[-1].role != "assistant":
            raise UserError(f"{where}: the last turn must be the assistant's answer")
        return messages
    for key in ("instruction", "output"):
        if not isinstance(record.get(key), str):
            raise UserError(f"{where}: missing string field '{key}'")
    prompt = record["instruction"]
    if record.get("input"):
        prompt = f"{prompt}\n{record['input']}"
    return [Message("user", prompt), Message("assistant", record["output"])]
