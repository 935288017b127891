"""Atomic outputs: write into a temporary sibling, rename into place only on success.

An interrupted or failed job therefore leaves no half-written output, and an existing
result is never clobbered unless the user passed `--force`.

Temporary siblings are named `.NAME.zhllama-tmp.HOST.PID.RANDOM` (and `.zhllama-old.` for the
previous output while a forced replacement swaps it out), so that a run killed with SIGKILL
leaves something recognisable: the next atomic write into the same folder removes such
siblings whose process is gone (`clean_stale`), and reports those it cannot judge (another
host's). Outputs get the modes a plain write gives, 0666/0777 minus the umask (mkstemp, mkdtemp
and safetensors' own temporary file would leave 0600/0700 whatever the umask).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import OUTPUT_NOTE, UserError

TMP_KIND = "zhllama-tmp"
OLD_KIND = "zhllama-old"


def _host_tag() -> str:
    """Hostname plus the PID namespace: a pid in a sibling's name is only judged where it means
    the same process (containers sharing a volume and a hostname still differ here)."""
    tag = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    try:
        tag += f"-{os.stat('/proc/self/ns/pid').st_ino:x}"
    except OSError:
        pass
    return tag


_HOST = _host_tag()
_SIBLING = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>zhllama-tmp|zhllama-old)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+(?P<suffix>.*)$"
)


def check_parent(path: Path) -> None:
    """Refuse an output whose nearest existing ancestor is not a folder (`x.txt/out`)."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{path}: cannot be created, {parent} is not a folder")
            return


def check_output_dir(path: Path, force: bool) -> None:
    """Refuse an existing non-empty output directory (or a file in its place) unless forced."""
    check_parent(path)
    if path.is_file():
        raise UserError(f"{path}: output path is an existing file")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise UserError(f"{path}: output directory exists and is not empty (use --force to replace it)")


def check_output_file(path: Path, force: bool) -> None:
    """Refuse an existing output file unless forced, and a folder in its place always."""
    check_parent(path)
    if path.is_dir():
        raise UserError(f"{path}: output path is an existing folder, expected a file")
    if path.exists() and not force:
        raise UserError(f"{path}: output file exists (use --force to replace it)")


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Give `path` (and everything under a folder) the modes a plain write would: 0666/0777 minus
    the umask, executables keeping their x bits. Libraries that write through their own temporary
    files (safetensors, for one) leave 0600 behind otherwise."""
    mask = current_umask()
    for entry in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if entry.is_symlink():
            continue
        mode = entry.stat().st_mode
        full = 0o777 if entry.is_dir() or mode & 0o111 else 0o666
        os.chmod(entry, full & ~mask)


def sibling_name(final: Path, kind: str = TMP_KIND, suffix: str = "") -> str:
    """A recognisable hidden temporary name next to `final`, owned by this process."""
    return f".{final.name}.{kind}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary siblings in `folder` left by killed runs; return what was removed.

    A sibling is stale when its process (pid in the name, this host) no longer runs. A stale
    `zhllama-old` sibling whose final output is missing holds the previous result of a swap that
    was killed half-way: it is kept and reported instead. Siblings from other hosts are reported.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _SIBLING.match(entry.name)
        if match is None:
            continue
        if match["host"] != _HOST:
            console.warn(
                f"{entry}: left by an interrupted zhllama run on host {match['host']}; remove it if that run is over"
            )
            continue
        if _pid_alive(int(match["pid"])):
            continue
        if match["kind"] == OLD_KIND and not (folder / match["name"]).exists():
            console.warn(
                f"{entry}: holds the previous {folder / match['name']} from an interrupted replacement; rename it back"
            )
            continue
        _remove(entry)
        removed.append(entry)
        console.log(f"removed {entry}: left by an interrupted run (pid {match['pid']})")
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished `tmp` at `final`; an existing `final` is swapped out and deleted."""
    if not final.exists():
        os.replace(tmp, final)
        return
    if _exchange(tmp, final):  # tmp now holds the old output: a kill from here on loses nothing
        _remove(tmp)
        return
    trash = final.parent / sibling_name(final, OLD_KIND)
    os.replace(final, trash)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(trash, final)
        raise
    _remove(trash)


# ---- the run ledger: what a command created outside its temporary siblings ---------------------
# Folders made for an output (`make_dirs`) and resumable logs (`zhllama.core.appendlog`) are noted
# here; when the command ends, `end_run` lets each log finish (`commit()`) and, when it failed,
# removes the folders it created that are left empty, so a failed command leaves nothing behind.
_LEDGER: dict[str, list] = {"dirs": [], "journals": []}


def begin_run() -> None:
    """Start a command with an empty ledger (the CLI calls this)."""
    _LEDGER["dirs"].clear()
    _LEDGER["journals"].clear()


def make_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """`mkdir -p path`, noting each folder it created (outermost first) in the run ledger."""
    path = Path(path)
    missing = []
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    created = list(reversed(missing))
    _LEDGER["dirs"].extend(created)
    return created


def note_journal(journal) -> None:
    """A resumable log (with `commit()`) this run writes to."""
    if journal not in _LEDGER["journals"]:
        _LEDGER["journals"].append(journal)


def forget_journal(journal) -> None:
    if journal in _LEDGER["journals"]:
        _LEDGER["journals"].remove(journal)


def end_run(failed: bool) -> None:
    """After a command: logs finish; on failure the folders it created that are empty are removed."""
    journals, dirs = list(_LEDGER["journals"]), list(_LEDGER["dirs"])
    begin_run()
    for journal in journals:
        journal.commit()
    if failed:
        for folder in reversed(dirs):
            try:
                folder.rmdir()
            except OSError:
                pass


def note_output(exc: BaseException, final: Path) -> None:
    """Name `final` on `exc` as the output being written (the error line names it)."""
    if not any(note.startswith(OUTPUT_NOTE) for note in getattr(exc, "__notes__", ())):
        exc.add_note(f"{OUTPUT_NOTE}{final}")


def _prepare(final: Path) -> None:
    make_dirs(final.parent)
    clean_stale(final.parent)


@contextmanager
def _noted(final: Path) -> Iterator[None]:
    """Note on any error the output being written, so that "disk full" names it (not a temp name)."""
    try:
        yield
    except BaseException as exc:
        note_output(exc, final)
        raise


@contextmanager
def _owned(tmp: Path, final: Path) -> Iterator[None]:
    """Remove `tmp` when anything (the job, a signal, the final rename) fails."""
    with _noted(final):
        try:
            yield
        except BaseException:
            _remove(tmp)
            raise


@contextmanager
def atomic_dir(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one rename."""
    final = Path(path)
    check_output_dir(final, force)
    with _noted(final):
        _prepare(final)
    tmp = final.parent / sibling_name(final)
    with _owned(tmp, final):
        tmp.mkdir()
        yield tmp
        apply_umask(tmp)
        _replace_dir(tmp, final)


def _new_file(final: Path, suffix: str = "") -> Path:
    tmp = final.parent / sibling_name(final, suffix=suffix)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


@contextmanager
def atomic_file(path: str | os.PathLike[str], force: bool = True, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary sibling file for writing; it is renamed onto `path` when the block succeeds."""
    final = Path(path)
    check_output_file(final, force)
    with _noted(final):
        _prepare(final)
        tmp = _new_file(final)
    with _owned(tmp, final):
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
        apply_umask(tmp)
        os.replace(tmp, final)


@contextmanager
def atomic_path(path: str | os.PathLike[str], force: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling *path* (for libraries that write files themselves)."""
    final = Path(path)
    check_output_file(final, force)
    with _noted(final):
        _prepare(final)
        tmp = _new_file(final, suffix=final.suffix)
    with _owned(tmp, final):
        yield tmp
        if tmp.exists():
            apply_umask(tmp)
        os.replace(tmp, final)
