"""Real outputs get the umask's modes (issue 18): safetensors writes its file 0600 through a
temporary file, mkstemp/mkdtemp give 0600/0700; zhllama's atomic outputs end as a plain write
would, 0644/0755 under umask 022 and 0600/0700 under 077."""

from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_model_and_tokenizer_outputs_follow_the_umask(
    run_cli, tmp_path, umask, base_tokenizer, zh_sp_model, mask, file_mode, dir_mode
):
    umask(mask)
    code, _, err = run_cli("tiny-model", "-t", base_tokenizer, "-o", tmp_path / "model")
    assert code == 0, err
    code, _, err = run_cli("vocab", "merge", "--base", base_tokenizer, "--add", zh_sp_model, "-o", tmp_path / "tok")
    assert code == 0, err
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert "model/model.safetensors" in modes and "tok/tokenizer.model" in modes
    expected = {name: dir_mode if (tmp_path / name).is_dir() else file_mode for name in modes}
    assert modes == expected
