"""A real write failure mid-output (issue 18, "disk full"): the file size limit (RLIMIT_FSIZE, with
SIGXFSZ ignored) makes the kernel fail writes with EFBIG, as a full disk fails them with ENOSPC.
Whatever library was writing (safetensors in Rust, gguf through numpy), the command exits 1 with
one line naming the output, and leaves nothing behind."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

LIMIT = 200_000  # bytes: less than the tiny model's weights


def _limited() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["tiny-model", "-t", "{tok}", "-o", "{out}/model"], id="safetensors"),
        pytest.param(["quantize", "gguf", "--model", "{model}", "--type", "F32", "-o", "{out}/m.gguf"], id="gguf"),
    ],
)
def test_a_write_cut_short_exits_1_naming_the_output_and_leaves_nothing(
    tmp_path, merged_tokenizer, tiny_zh_model, command
):
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(tok=merged_tokenizer, model=tiny_zh_model, out=out) for a in command]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "zhllama", *argv], capture_output=True, text=True, preexec_fn=_limited, env=env
    )
    assert proc.returncode == 1, proc.stderr
    output = argv[argv.index("-o") + 1]
    assert proc.stderr.splitlines() in (
        [f"zhllama: error: {output}: file too large for this file system"],  # EFBIG, as such (safetensors)
        [f"zhllama: error: {output}: a write was cut short (disk full or file size limit)"],  # numpy's short write
    )
    assert list(out.iterdir()) == []
