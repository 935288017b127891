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

# One interpreter (one start-up) runs each command line given as a tab-joined argument.
SCRIPT = """
import sys
from zhllama.cli.app import run
print(" ".join(str(run(argv.split("\\t"))) for argv in sys.argv[1:]))
"""


def _limited() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_write_cut_short_exits_1_naming_the_output_and_leaves_nothing(tmp_path, merged_tokenizer, tiny_zh_model):
    out = tmp_path / "out"
    out.mkdir()
    commands = [
        ["tiny-model", "-t", str(merged_tokenizer), "-o", str(out / "model")],
        ["quantize", "gguf", "--model", str(tiny_zh_model), "--type", "F32", "-o", str(out / "m.gguf")],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *("\t".join(c) for c in commands)],
        capture_output=True,
        text=True,
        preexec_fn=_limited,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.stdout.split() == ["1", "1"], proc.stderr
    assert proc.stderr.splitlines() == [
        f"zhllama: error: {out / 'model'}: file too large for this file system",  # EFBIG as such (safetensors)
        f"zhllama: error: {out / 'm.gguf'}: a write was cut short (disk full or file size limit)",  # numpy
    ]
    assert list(out.iterdir()) == []
