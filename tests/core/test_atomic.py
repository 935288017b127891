"""Outputs appear whole or not at all; existing results are kept unless forced."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys

import pytest

from zhllama.core import atomic
from zhllama.core.atomic import atomic_dir, atomic_file, atomic_path
from zhllama.core.errors import UserError
from zhllama.core.paths import check_output, iter_text_lines, read_text_file


def test_failed_job_leaves_no_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_success_renames_into_place(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (out / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_existing_non_empty_output_is_refused_unless_forced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    with pytest.raises(UserError, match="--force"):
        with atomic_dir(out):
            pass
    assert (out / "keep.txt").read_text() == "keep"
    with atomic_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_file(target) as handle:
            handle.write("new")
            raise ValueError
    assert target.read_text() == "old"


# --- hardening (issue 18): names, stale siblings, failed renames, modes ------------------------

SIBLING = re.compile(r"^\.out\.zhllama-tmp\.[A-Za-z0-9-]+\.(\d+)\.[0-9a-f]+$")


def _dead_pid() -> int:
    """The pid of a process that has exited (and not been reused yet, on a busy machine)."""
    while True:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        if not atomic._pid_alive(proc.pid):
            return proc.pid


def test_temp_sibling_is_named_with_this_pid(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        match = SIBLING.match(tmp.name)
        assert match is not None, tmp.name
        assert int(match.group(1)) == os.getpid()
        assert tmp.parent == tmp_path


def test_stale_siblings_of_dead_runs_are_removed_by_the_next_write(tmp_path):
    dead = _dead_pid()
    stale_dir = tmp_path / f".model.zhllama-tmp.{atomic._HOST}.{dead}.0badc0de"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x" * 1000)
    stale_file = tmp_path / f".m.gguf.zhllama-tmp.{atomic._HOST}.{dead}.deadbeef.gguf"
    stale_file.write_bytes(b"half")
    alive = tmp_path / f".other.zhllama-tmp.{atomic._HOST}.{os.getpid()}.12345678"
    alive.mkdir()
    unrelated = tmp_path / ".keep.tmp-123"
    unrelated.write_text("not ours")
    with atomic_file(tmp_path / "r.json") as handle:
        handle.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, unrelated.name, "r.json"])


def test_stale_old_sibling_without_its_output_is_kept_and_reported(tmp_path, capsys):
    dead = _dead_pid()
    old = tmp_path / f".model.zhllama-old.{atomic._HOST}.{dead}.0badc0de"
    old.mkdir()
    (old / "model").mkdir()
    removed = atomic.clean_stale(tmp_path)
    assert removed == [] and old.is_dir()
    assert "interrupted replacement" in capsys.readouterr().err
    (tmp_path / "model").mkdir()  # the swap had finished: the old copy is garbage now
    assert atomic.clean_stale(tmp_path) == [old]


def test_other_hosts_siblings_are_reported_not_removed(tmp_path, capsys):
    foreign = tmp_path / ".out.zhllama-tmp.some-other-host.1.0badc0de"
    foreign.mkdir()
    assert atomic.clean_stale(tmp_path) == []
    assert foreign.is_dir()
    assert "some-other-host" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["file", "path", "dir", "dir-replace"])
def test_failed_final_rename_removes_the_temp_output(tmp_path, monkeypatch, which):
    target = tmp_path / "out"
    if which == "dir-replace":
        target.mkdir()
        (target / "old.txt").write_text("old")
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # take the two-rename path

    def fail(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    with pytest.raises(OSError, match="No space"):
        if which == "file":
            with atomic_file(target) as handle:
                handle.write("x")
                monkeypatch.setattr(atomic.os, "replace", fail)
        elif which == "path":
            with atomic_path(target) as tmp:
                tmp.write_text("x")
                monkeypatch.setattr(atomic.os, "replace", fail)
        else:
            with atomic_dir(target, force=True) as tmp:
                (tmp / "new.txt").write_text("x")
                monkeypatch.setattr(atomic.os, "replace", fail)
    monkeypatch.undo()
    left = sorted(p.name for p in tmp_path.iterdir())
    if which == "dir-replace":
        assert left == ["out"] and (target / "old.txt").read_text() == "old"
    else:
        assert left == []


def test_forced_replacement_swaps_and_leaves_no_sibling(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_file_outputs_refuse_a_folder_in_their_place(tmp_path):
    (tmp_path / "out").mkdir()
    for make in (atomic_file, atomic_path):
        with pytest.raises(UserError, match="existing folder"):
            with make(tmp_path / "out"):
                pass


MODES_SCRIPT = """
import json, os, stat, sys
os.umask(int(sys.argv[2], 8))
from pathlib import Path
from zhllama.core.atomic import atomic_dir, atomic_file, atomic_path
root = Path(sys.argv[1])
with atomic_dir(root / "model") as tmp:
    (tmp / "weights.bin").write_bytes(b"w")
    (tmp / "sub").mkdir(mode=0o700)
    fd = os.open(tmp / "sub" / "private.safetensors", os.O_CREAT | os.O_WRONLY, 0o600)  # as safetensors does
    os.close(fd)
    (tmp / "run.sh").write_text("#!/bin/sh")
    os.chmod(tmp / "run.sh", 0o700)
with atomic_dir(root / "model2") as tmp:
    (tmp / "weights.bin").write_bytes(b"w2")
    os.chmod(tmp, 0o700)
with atomic_dir(root / "model2", force=True) as tmp:
    (tmp / "weights.bin").write_bytes(b"w3")
with atomic_file(root / "report.json") as handle:
    handle.write("{}")
with atomic_path(root / "m.gguf") as tmp:
    tmp.unlink()
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))}
print(json.dumps(modes))
"""


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [("022", 0o644, 0o755), ("077", 0o600, 0o700)])
def test_output_modes_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    proc = subprocess.run(
        [sys.executable, "-c", MODES_SCRIPT, str(tmp_path), umask], capture_output=True, text=True, check=True
    )
    modes = json.loads(proc.stdout)
    exec_mode = dir_mode
    assert modes == {
        "m.gguf": file_mode,
        "model": dir_mode,
        "model/run.sh": exec_mode,
        "model/sub": dir_mode,
        "model/sub/private.safetensors": file_mode,
        "model/weights.bin": file_mode,
        "model2": dir_mode,
        "model2/weights.bin": file_mode,
        "report.json": file_mode,
    }


def test_check_output_refuses_input_itself_parent_child_symlink_and_hardlink(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    weights = model / "model.safetensors"
    weights.write_bytes(b"w")
    link = tmp_path / "link"
    link.symlink_to(model)
    hard = tmp_path / "hard.safetensors"
    os.link(weights, hard)
    cases = {
        (model, model): "is",
        (tmp_path, model): "contains",
        (weights, model): "sits inside",
        (link, model): "is",
        (link / "x", model): "sits inside",
        (model / "out", link): "sits inside",
        (hard, weights): "is",
    }
    for (out, given), relation in cases.items():
        with pytest.raises(UserError, match=f"the output {relation} the input") as info:
            check_output(out, [None, given])
        message = str(info.value)
        assert str(out) in message and str(given) in message and "\n" not in message
    check_output(tmp_path / "model-merged", [model, None, tmp_path / "missing"])
    check_output(tmp_path / "org", ["org/name"])  # a hub id that is no path is not an input folder


def test_text_readers_name_the_file_and_byte(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("一\r\n二\n", encoding="utf-8")
    assert read_text_file(good) == "一\r\n二\n"
    assert list(iter_text_lines(good)) == ["一", "二"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes("第一行\n".encode() + b"ok \xff\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(bad))}: not UTF-8 text \(byte 13: invalid start byte\)$"):
        read_text_file(bad)
    with pytest.raises(UserError, match=r"byte 13: invalid start byte"):
        list(iter_text_lines(bad))
    with pytest.raises(UserError, match="is a folder"):
        read_text_file(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        list(iter_text_lines(tmp_path / "missing.txt"))
