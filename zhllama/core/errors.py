"""Error types that map onto exit codes.

`UserError` is for anything the user can fix (a missing file, a bad value, a malformed
record): the CLI prints it as one line `zhllama: error: ...` and exits 2. Anything else
is an internal failure (exit 1); its traceback is shown only with `--debug`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 130


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
