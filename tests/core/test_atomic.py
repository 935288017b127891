"""Outputs appear whole or not at all; existing results are kept unless forced."""

from __future__ import annotations

import pytest

from zhllama.core.atomic import atomic_dir, atomic_file
from zhllama.core.errors import UserError


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
