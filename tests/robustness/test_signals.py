"""Killing a real `zhllama quantize gguf` while it writes (issue 18, interruption).

SIGTERM: the run removes its temporary sibling and exits 143 with one line (SIGINT, which
raises KeyboardInterrupt the same way, is covered in-process by test_exit_codes).
SIGKILL: nothing can run, so the sibling stays, named with the dead pid; the next command that
writes into the same folder removes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_model(tmp_path_factory, merged_tokenizer) -> Path:
    """~110 MB of fp32 weights: quantizing it to Q8_0 takes long enough to be caught mid-write."""
    from zhllama.core.tiny import TinyShape, build_tiny_llama

    shape = TinyShape(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=12, num_key_value_heads=4
    )
    return build_tiny_llama(tmp_path_factory.mktemp("signals") / "big", tokenizer=merged_tokenizer, shape=shape)


def _start_quantize(model: Path, output: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "zhllama",
        "quantize",
        "gguf",
        "--model",
        str(model),
        "--type",
        "Q8_0",
        "-o",
        str(output),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_temp_sibling(proc: subprocess.Popen, folder: Path, timeout: float = 180.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in folder.iterdir() if ".zhllama-tmp." in p.name]
        if found:
            return found[0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"quantize ended (exit {proc.returncode}) before it was caught writing: {err}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail("quantize never started writing")


def _stopped_mid_write(model: Path, folder: Path, attempts: int = 3) -> tuple[subprocess.Popen, Path]:
    """A quantize run frozen (SIGSTOP) while its temporary sibling exists and its output does not.

    On a loaded machine the poller may only look after the rename; such a run is discarded and
    the next attempt starts in a fresh folder."""
    for attempt in range(attempts):
        out = folder / f"try{attempt}"
        out.mkdir()
        proc = _start_quantize(model, out / "m.gguf")
        sibling = _wait_for_temp_sibling(proc, out)
        proc.send_signal(signal.SIGSTOP)
        if sibling.exists() and not (out / "m.gguf").exists():
            return proc, sibling
        proc.send_signal(signal.SIGCONT)
        proc.communicate(timeout=120)
    pytest.fail(f"quantize was never caught mid-write in {attempts} attempts")


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM")])  # SIGINT: test_exit_codes
def test_term_removes_the_partial_output(big_model, tmp_path, sig, code, name):
    proc, sibling = _stopped_mid_write(big_model, tmp_path)
    try:
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f".{proc.pid}." in sibling.name
    assert proc.returncode == code, err
    assert err.splitlines() == [f"zhllama: error: interrupted by {name}; unfinished outputs were removed"]
    assert out == ""
    assert list(sibling.parent.iterdir()) == []


def test_sigkill_leaves_a_named_sibling_that_the_next_writer_removes(big_model, tmp_path, run_cli):
    proc, sibling = _stopped_mid_write(big_model, tmp_path)
    folder = sibling.parent
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert sibling.exists() and sibling.name.startswith(".m.gguf.zhllama-tmp.") and f".{proc.pid}." in sibling.name
    from zhllama.core.assets import data_path

    code, _, err = run_cli(
        "vocab", "train", "-i", data_path("corpus_en.txt"), "--vocab-size", 300, "-o", folder / "sp.model"
    )
    assert code == 0, err
    assert f"removed {sibling}: left by an interrupted run (pid {proc.pid})" in err
    assert [p.name for p in folder.iterdir()] == ["sp.model"]
