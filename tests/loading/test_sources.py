"""Every inference command accepts any model source: a hub id from an offline cache, a Meta folder.

The hub cache is laid out exactly as huggingface_hub writes it (blobs named by content hash,
`refs/main` holding the commit, `snapshots/<commit>/` of relative symlinks into the blobs).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(model: Path, hf_home: Path, repo: str) -> Path:
    """Lay out `model`'s files as huggingface_hub's cache does; returns the snapshot folder."""
    org, name = repo.split("/")
    root = hf_home / "hub" / f"models--{org}--{name}"
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for f in sorted(model.iterdir()):
        data = f.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (root / "blobs" / blob).write_bytes(data)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", blob))
    return snapshot


def chat(*args, env=None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "zhllama", "--json", "chat", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


GREEDY = ("--prompt", "北京", "--template", "none", "--greedy", "--max-new-tokens", "8")


@pytest.fixture(scope="module")
def folder_answer(tiny_zh_model):
    code, out, err = chat("--model", tiny_zh_model, *GREEDY)
    assert code == 0, err
    return json.loads(out)["answer"]


def test_chat_with_a_hub_id_from_the_offline_cache(tiny_zh_model, tmp_path, folder_answer):
    write_hub_cache(tiny_zh_model, tmp_path / "hf", "zh-org/tiny-zh")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    for spec in ("zh-org/tiny-zh", f"zh-org/tiny-zh@{COMMIT}"):
        code, out, err = chat("--model", spec, *GREEDY, env=env)
        assert code == 0, err
        assert json.loads(out)["answer"] == folder_answer
    code, _, err = chat("--model", "zh-org/not-cached", *GREEDY, env=env)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("zhllama: error: zh-org/not-cached: no such folder, and not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE" in err


def test_chat_with_a_meta_checkpoint_folder(tiny_zh_model, tmp_path, folder_answer):
    from zhllama.core.checkpoint.convert import convert

    meta = tmp_path / "meta"
    convert(tiny_zh_model, meta, src="hf", dst="meta")
    assert sorted(p.name for p in meta.glob("consolidated.*.pth")) and (meta / "params.json").is_file()
    env = {"ZHLLAMA_CACHE": str(tmp_path / "cache")}
    code, out, err = chat("--model", meta, *GREEDY, env=env)
    assert code == 0, err
    assert json.loads(out)["answer"] == folder_answer
    (meta / "params.json").write_text("{not json")
    code, _, err = chat("--model", meta, *GREEDY, env={"ZHLLAMA_CACHE": str(tmp_path / "cache2")})
    assert code == 2 and "params.json" in err and err.count("\n") == 1
