"""The one exception -> exit code mapping (`zhllama.core.errors.classify`, `cli.app.run`).

Storage failures exit 1, user mistakes 2, SIGINT 130, SIGTERM 143: each with exactly one
stderr line, and no temporary sibling left where the output was going.
"""

from __future__ import annotations

import errno
import os
import signal

import pytest

from zhllama.core import vocab
from zhllama.core.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Interrupted, UserError, classify


def _train_args(tmp_path, corpus):
    return ["vocab", "train", "-i", corpus, "--vocab-size", 300, "-o", tmp_path / "out" / "sp.model"]


@pytest.fixture
def corpus(tmp_path):
    from zhllama.core.assets import data_path

    return data_path("corpus_en.txt")


def _fail_copy_with(exc):
    def copy(src, dst, *args, **kwargs):
        with open(dst, "wb") as handle:
            handle.write(b"partial")  # something was written before the failure
        raise exc

    return copy


@pytest.mark.parametrize(
    ("code", "strerror", "expected"),
    [
        (errno.ENOSPC, "No space left on device", "no space left on device"),
        (errno.EDQUOT, "Disk quota exceeded", "disk quota exceeded"),
        (errno.EROFS, "Read-only file system", "read-only file system"),
        (errno.EACCES, "Permission denied", "permission denied"),
    ],
)
def test_storage_failures_exit_1_with_one_line_and_no_leftovers(
    run_cli, tmp_path, corpus, monkeypatch, code, strerror, expected
):
    target = tmp_path / "out" / "sp.model"
    monkeypatch.setattr(vocab.shutil, "copyfile", _fail_copy_with(OSError(code, strerror, str(target))))
    rc, out, err = run_cli(*_train_args(tmp_path, corpus))
    assert rc == 1
    assert out == ""
    assert err.splitlines() == [f"zhllama: error: {target}: {expected}"]
    assert not (tmp_path / "out").exists()  # nor the folder the run created


def test_interrupt_exits_130_and_removes_the_partial_output(run_cli, tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(vocab.shutil, "copyfile", _fail_copy_with(KeyboardInterrupt()))
    rc, out, err = run_cli(*_train_args(tmp_path, corpus))
    assert rc == EXIT_INTERRUPTED == 130
    assert err.splitlines() == ["zhllama: error: interrupted by SIGINT; unfinished outputs were removed"]
    assert not (tmp_path / "out").exists()  # nor the folder the run created


def test_sigterm_in_process_exits_143_cleans_up_and_restores_the_handler(run_cli, tmp_path, corpus, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)

    def copy(src, dst, *args, **kwargs):
        with open(dst, "wb") as handle:
            handle.write(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the CLI's handler at the next bytecode

    monkeypatch.setattr(vocab.shutil, "copyfile", copy)
    rc, out, err = run_cli(*_train_args(tmp_path, corpus))
    assert rc == EXIT_TERMINATED == 143
    assert err.splitlines() == ["zhllama: error: interrupted by SIGTERM; unfinished outputs were removed"]
    assert not (tmp_path / "out").exists()  # nor the folder the run created
    assert signal.getsignal(signal.SIGTERM) is before


def test_undecodable_input_without_a_name_is_still_a_user_error(run_cli, tmp_path, corpus, monkeypatch):
    def boom(*args, **kwargs):
        b"\xff".decode("utf-8")

    monkeypatch.setattr(vocab, "train", boom)
    rc, _, err = run_cli(*_train_args(tmp_path, corpus))
    assert rc == 2
    assert err.splitlines() == ["zhllama: error: an input is not UTF-8 text (byte 0: invalid start byte)"]


def test_a_bug_is_one_internal_error_line_and_debug_adds_the_traceback(run_cli, tmp_path, corpus, monkeypatch):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(vocab, "train", boom)
    rc, _, err = run_cli(*_train_args(tmp_path, corpus))
    assert rc == 1
    assert err.splitlines() == [
        "zhllama: internal error: ZeroDivisionError: division by zero (run with --debug for the traceback)"
    ]
    rc, _, err = run_cli("--debug", *_train_args(tmp_path, corpus))
    assert rc == 1
    assert "Traceback" in err and err.splitlines()[-1].startswith("zhllama: internal error: ZeroDivisionError")


def test_log_lines_show_on_success_and_vanish_on_failure(run_cli, tmp_path, corpus):
    rc, _, err = run_cli(*_train_args(tmp_path, corpus))
    assert rc == 0
    assert err.splitlines() == ["training a bpe SentencePiece model with 300 pieces ..."]
    rc, _, err = run_cli(*_train_args(tmp_path, corpus))  # the output exists now
    assert rc == 2
    assert err.splitlines() == [
        f"zhllama: error: {tmp_path / 'out' / 'sp.model'}: output file exists (use --force to replace it)"
    ]


def test_classify_table():
    assert classify(UserError("a\nb")) == (2, "zhllama: error: a b")
    assert classify(Interrupted(signal.SIGTERM))[0] == 143
    assert classify(KeyboardInterrupt())[0] == 130
    assert classify(FileNotFoundError(errno.ENOENT, "No such file or directory", "x.txt")) == (
        2,
        "zhllama: error: x.txt: no such file or directory",
    )
    assert classify(OSError(errno.ENOSPC, "No space left on device")) == (1, "zhllama: error: no space left on device")
    assert classify(OSError(errno.EIO, "I/O error"))[1].startswith("zhllama: internal error: OSError")
    wrapped = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    wrapped.add_note("zhllama output: out/model")
    assert classify(wrapped) == (1, "zhllama: error: out/model: no space left on device")
    assert classify(OSError("100864 requested and 41488 written")) == (
        1,
        "zhllama: error: a write was cut short (disk full or file size limit)",
    )


def test_held_log_lines_stream_after_hold_seconds_and_at_once_on_a_terminal(monkeypatch):
    import io
    import time

    from rich.console import Console

    from zhllama.core import console

    piped = Console(file=io.StringIO(), force_terminal=False, soft_wrap=True, highlight=False)
    monkeypatch.setattr(console, "stderr", piped)
    monkeypatch.setattr(console, "HOLD_SECONDS", 0.05)
    console.begin_command()
    with console._HELD.lock:  # the hold's timer cannot release the line while this test looks
        console.log("loading model ...")
        assert piped.file.getvalue() == ""  # held: the command may still fail within HOLD_SECONDS
        assert console._HELD.timer is not None and console._HELD.timer.interval == 0.05  # armed
    deadline = time.monotonic() + 60  # then the timer writes it: waited for, generously
    while piped.file.getvalue() == "" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert piped.file.getvalue() == "loading model ...\n"  # a long job's log still streams
    assert console._HELD.timer is None and not console._HELD.active  # released once, hold over
    console.end_command(False)

    terminal = Console(file=io.StringIO(), force_terminal=True, soft_wrap=True, highlight=False)
    monkeypatch.setattr(console, "stderr", terminal)
    console.begin_command()
    console.log("loading model ...")
    assert "loading model ..." in terminal.file.getvalue()
    console.end_command(False)


def test_a_group_without_a_subcommand_prints_its_help(run_cli):
    code, out, err = run_cli("vocab")
    assert code == 0 and err == ""
    assert "Usage: zhllama vocab" in out and "merge" in out


def test_an_unwritable_output_folder_names_the_output_not_the_temporary_name(run_cli, tmp_path, corpus, monkeypatch):
    from zhllama.core import atomic

    def refuse(final, suffix=""):
        tmp = final.parent / atomic.sibling_name(final, suffix=suffix)
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))  # as open(2) in a 0555 folder

    monkeypatch.setattr(atomic, "_new_file", refuse)
    rc, _, err = run_cli(*_train_args(tmp_path, corpus))
    assert rc == 1
    assert err.splitlines() == [f"zhllama: error: {tmp_path / 'out' / 'sp.model'}: permission denied"]


def test_nested_commands_share_the_outer_hold(monkeypatch):
    """`zhllama demo` runs the other commands in-process: their settling must not drop its lines."""
    import io

    from rich.console import Console

    from zhllama.core import console

    piped = Console(file=io.StringIO(), force_terminal=False, soft_wrap=True, highlight=False)
    monkeypatch.setattr(console, "stderr", piped)
    console.begin_command()
    console.log("stage 1: vocab train")
    console.begin_command()  # the nested command
    console.log("nested log")
    console.end_command(False)  # a nested failure does not settle the outer hold
    assert piped.file.getvalue() == ""
    console.end_command(True)
    assert piped.file.getvalue() == "stage 1: vocab train\nnested log\n"


def test_log_and_warning_lines_survive_brackets_in_paths(monkeypatch):
    import io

    from rich.console import Console

    from zhllama.core import console

    piped = Console(file=io.StringIO(), force_terminal=False, soft_wrap=True, highlight=False)
    monkeypatch.setattr(console, "stderr", piped)
    console.log("loading /data/[/b]/model ...")  # not valid markup: printed as is, no MarkupError
    console.warn("/data/[x]/tok: merged pieces tie in score")
    assert piped.file.getvalue().splitlines() == [
        "loading /data/[/b]/model ...",
        "zhllama: warning: /data/[x]/tok: merged pieces tie in score",
    ]
