"""Error types that map onto exit codes.

`UserError` is for anything the user can fix (a missing file, a bad value, a malformed
record): the CLI prints it as one line `zhllama: error: ...` and exits 2. `classify(exc)` is
the one mapping from an exception to (exit code, message line) that `zhllama.cli.app.run` uses:

| exception | exit | line |
|---|---|---|
| UserError, UnicodeDecodeError, FileNotFoundError/IsADirectoryError/NotADirectoryError | 2 | `zhllama: error: ...` |
| disk full / quota / read-only / permission (ENOSPC, EDQUOT, EFBIG, EROFS, EACCES, EPERM), also wrapped by a library ("(os error 28)", numpy's short write, torch.save's zip writer) | 1 | `zhllama: error: PATH: ...` |
| SIGINT / SIGTERM (`Interrupted`, KeyboardInterrupt) | 130 / 143 | `zhllama: error: interrupted ...` |
| anything else (a bug) | 1 | `zhllama: internal error: ...` |

PATH is the output being written when the failure happened inside `zhllama.core.atomic` (noted on
the exception), else the file the OS error names. Tracebacks are shown only with `--debug`.
"""

from __future__ import annotations

import difflib
import errno
import re
import signal
from collections.abc import Iterable

EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143

# The file system refused to store the output: not a bug, not a bad input either (exit 1).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
STORAGE_HINTS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class UserError(Exception):
    """A problem with the user's input; the message must name the file or field at fault."""


class MissingDependencyError(UserError):
    """An optional backend's packages are not installed; the message says how to install them."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """A uniform 'unknown X' error listing what is available."""
    choices = sorted(choices)
    return UserError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}; available: {', '.join(choices) or 'none'}")


class Interrupted(BaseException):
    """Raised by the CLI's SIGTERM handler: like KeyboardInterrupt, cleanup (`finally`, atomic
    outputs) runs, and `except Exception` does not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def one_line(message: object) -> str:
    """Join a (possibly multi-line) message into one line."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


OUTPUT_NOTE = "zhllama output: "
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")  # Rust libraries (safetensors, tokenizers)
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")  # numpy's tofile on a full disk
# torch.save's zip writer on a full disk (the errno is lost in its C++ exception)
_TORCH_SHORT_WRITE = re.compile(r"inline_container\.cc.*unexpected pos|PytorchStreamWriter failed writing file")


def storage_failure(exc: BaseException) -> str | None:
    """What the file system refused (disk full, read-only, ...), also when a library wrapped it."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return STORAGE_HINTS[exc.errno]
    if isinstance(exc, OSError) and exc.errno is None and _SHORT_WRITE.match(str(exc)):
        return "a write was cut short (disk full or file size limit)"
    if isinstance(exc, RuntimeError) and _TORCH_SHORT_WRITE.search(str(exc)):
        return "a write was cut short (disk full or file size limit)"
    match = _OS_ERROR_IN_TEXT.search(str(exc))
    if match and int(match.group(1)) in STORAGE_ERRNOS:
        return STORAGE_HINTS[int(match.group(1))]
    return None


def _output_note(exc: BaseException) -> str | None:
    """The output being written when `exc` happened (noted by zhllama.core.atomic)."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(OUTPUT_NOTE):
            return note[len(OUTPUT_NOTE) :]
    return None


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the single stderr line for an exception that ended a command."""
    if isinstance(exc, Interrupted):
        name = signal.Signals(exc.signum).name
        return 128 + exc.signum, f"zhllama: error: interrupted by {name}; unfinished outputs were removed"
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "zhllama: error: interrupted by SIGINT; unfinished outputs were removed"
    if isinstance(exc, UserError):
        return EXIT_USER, f"zhllama: error: {one_line(exc)}"
    if isinstance(exc, UnicodeDecodeError):
        return EXIT_USER, f"zhllama: error: an input is not UTF-8 text (byte {exc.start}: {exc.reason})"
    storage = storage_failure(exc)
    if storage is not None:
        where = _output_note(exc) or getattr(exc, "filename", None)  # the output, not its temporary sibling
        return EXIT_INTERNAL, f"zhllama: error: {f'{where}: ' if where else ''}{storage}"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)) and exc.filename is not None:
        where = _output_note(exc) or exc.filename
        return EXIT_USER, f"zhllama: error: {where}: {(exc.strerror or type(exc).__name__).lower()}"
    return (
        EXIT_INTERNAL,
        f"zhllama: internal error: {type(exc).__name__}: {one_line(exc)} (run with --debug for the traceback)",
    )
