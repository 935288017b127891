"""`AppendLog`: the one resumable JSON-lines output (predict's `--output`, eval's `predictions.jsonl`).

- Opening validates what is there: every line must be a JSON object holding the log's `fields`; a
  last line without its newline (cut by an interruption) is dropped, reported with `console.warn`,
  and redone; anything else (a corrupt line, a foreign file, non-UTF-8 bytes, a symlink or a folder
  in its place) is a one-line `UserError` naming the file and line.
- `append(records)` writes whole lines through `O_APPEND | O_NOFOLLOW`, then flushes and fsyncs, so
  a record on disk is a finished record whatever happens next.
- A write the file system refuses (disk full, read-only) is undone at once: the lines of that call
  are cut off again and a file this run created that holds nothing is removed (the folders the run
  created are removed by `zhllama.core.atomic`'s run ledger when the command fails). Finished records
  stay, as after an interruption: a rerun once there is space resumes from them.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path

from zhllama.core import atomic, console
from zhllama.core.errors import UserError, storage_failure
from zhllama.core.paths import parse_json_line


class AppendLog:
    """A validated, fsynced, resumable JSON-lines file of records keyed by `key(record)`.

    `fields`: keys every record must hold (checked on load); `check(record)` may return a reason
    to refuse a record (e.g. "another prompt"); `fresh=True` starts over (the old file is kept
    aside until the run succeeds); `hint` ends the error for a file that is not this log.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: Callable[[dict], Hashable],
        fields: Iterable[str] = (),
        what: str = "zhllama log",
        hint: str = "choose another --output or remove the file",
        check: Callable[[dict], str | None] | None = None,
        fresh: bool = False,
        report: bool = True,
    ):
        self.path = Path(path)
        self.key = key
        self.fields = tuple(fields)
        self.what = what
        self.hint = hint
        self.check = check
        self.fresh = fresh
        self.report = report
        self.records: dict[Hashable, dict] = {}
        self.dropped = b""  # a torn last line found on load
        self._valid = 0  # bytes of whole lines
        self._existed = False
        self._aside: Path | None = None  # the previous file while a fresh log is written
        self._opened = False
        self._load()

    # ---- reading ---------------------------------------------------------------------------
    def _refuse(self, why: str) -> UserError:
        return UserError(f"{self.path}: {why}; refusing to append through it")

    def _load(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise UserError(f"{self.path}: cannot be created, a parent is not a folder") from None
        import stat

        if stat.S_ISLNK(st.st_mode):
            raise self._refuse("not a regular file (a symlink)")
        if not stat.S_ISREG(st.st_mode):
            raise self._refuse("not a regular file (a folder or special file)")
        self._existed = True
        if self.fresh:
            return
        data = self.path.read_bytes()
        self._valid = len(data)
        lines = data.split(b"\n")
        if lines[-1]:
            self.dropped = lines[-1]
            self._valid -= len(self.dropped)
        for number, raw in enumerate(lines[:-1], 1):
            if not raw.strip():
                continue
            record = self._parse(number, raw)
            self.records[self.key(record)] = record
        if self.dropped and self.report:
            console.warn(
                f"{self.path}: dropped its last line ({len(self.dropped)} bytes without a line end, cut by an "
                "interrupted run); it is redone"
            )

    def _parse(self, number: int, raw: bytes) -> dict:
        where = f"{self.path}:{number}"
        try:
            record = parse_json_line(raw.decode("utf-8"), where)  # the toolkit's one wording, then what this is
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{where}: not UTF-8 text (byte {exc.start}: {exc.reason}); not a {self.what}; {self.hint}"
            ) from None
        except UserError as exc:
            raise UserError(f"{exc}; not a {self.what}; {self.hint}") from None
        missing = [f for f in self.fields if f not in record]
        if missing:
            raise UserError(f"{where}: no '{missing[0]}'; not a {self.what}; {self.hint}")
        if self.check is not None:
            why = self.check(record)
            if why:
                raise UserError(f"{where}: {why}; {self.hint}")
        try:
            hash(self.key(record))
        except (TypeError, KeyError, ValueError):
            raise UserError(f"{where}: malformed key fields; not a {self.what}; {self.hint}") from None
        return record

    def has(self, key: Hashable) -> bool:
        return key in self.records

    # ---- writing ---------------------------------------------------------------------------
    def _open_for_append(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        if not self._opened:
            atomic.make_dirs(self.path.parent)
            if self.fresh and self._existed:
                self._aside = self.path.parent / atomic.sibling_name(self.path, atomic.OLD_KIND)
                os.replace(self.path, self._aside)
            atomic.note_journal(self)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse("is a symlink") from None
            raise
        if not self._opened:
            self._opened = True
            if self.dropped:
                os.ftruncate(fd, self._valid)
        return fd

    def append(self, records: Iterable[dict]) -> None:
        """Write whole lines, then fsync; the records count as done only once on disk. When the file
        system refuses the write (disk full, read-only), the lines of this call are cut off again, and
        a file this run created that holds nothing is removed (the previous one of a `fresh` log is put
        back): finished records stay, nothing half-written does."""
        records = list(records)
        if not records:
            return
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        fd = self._open_for_append()
        before = os.fstat(fd).st_size
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException as exc:
            atomic.note_output(exc, self.path)
            if storage_failure(exc) is not None:
                self._undo(fd, before)
            raise
        finally:
            os.close(fd)
        for record in records:
            self.records[self.key(record)] = record

    def _undo(self, fd: int, before: int) -> None:
        try:
            os.ftruncate(fd, before)
            if before == 0 and (self.fresh or not self._existed):
                self.path.unlink(missing_ok=True)
                if self._aside is not None:
                    os.replace(self._aside, self.path)
                    self._aside = None
                self._opened = False
        except OSError as exc:
            console.warn(f"{self.path}: could not be cut back after the failed write ({exc.strerror})")

    def commit(self) -> None:
        """The run is over: drop the previous file kept aside by `fresh=True` (the CLI calls this)."""
        if self._aside is not None:
            self._aside.unlink(missing_ok=True)
            self._aside = None
        atomic.forget_journal(self)
