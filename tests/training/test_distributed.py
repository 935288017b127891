"""2-process `pretrain` under torchrun with DeepSpeed ZeRO-2 / ZeRO-3 on CPU (gloo + DeepSpeed's CPU
accelerator): per-step losses equal the single-process run, the gathered adapter equals it, and a
sharded checkpoint resumes bit-exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zhllama.core.assets import data_path

pytestmark = pytest.mark.slow
LOSS_TOLERANCE = 1e-5  # float32 reductions in a different order (2 ranks vs one batch of 2)


def run(tmp_path, model, tokenizer, name, nproc, *extra):
    out = tmp_path / name
    launcher = (
        [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(nproc)]
        if nproc > 1
        else [sys.executable]
    )
    args = [
        *launcher,
        "-m",
        "zhllama",
        "--json",
        "pretrain",
        "--model",
        str(model),
        "--tokenizer",
        str(tokenizer),
        "--data",
        str(data_path("corpus_zh.txt")),
        "--output",
        str(out),
        "--max-steps",
        "6",
        "--save-steps",
        "3",
        "--block-size",
        "32",
        "--lora-rank",
        "4",
        "--lora-dropout",
        "0",
        "--logging-steps",
        "1",
        "--learning-rate",
        "1e-3",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--trainer-arg",
        "train_sampling_strategy=sequential",  # the same blocks per step for 1x2 and 2x1
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # stdout holds only the JSON summary (DeepSpeed logs go to stderr)
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    return out, summary, [e["loss"] for e in state["log_history"] if "loss" in e]


def same_adapter(a: Path, b: Path, atol: float) -> None:
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert x.keys() == y.keys()
    for key in x:
        assert x[key].shape == y[key].shape and x[key].numel() > 0, key  # ZeRO-3 partitions gathered
        assert torch.allclose(x[key], y[key], atol=atol, rtol=0), key


def test_deepspeed_zero2_zero3_match_single_process_and_resume(tmp_path, tiny_base_model, merged_tokenizer):
    single, s1, reference = run(
        tmp_path, tiny_base_model, merged_tokenizer, "single", 1, "--per-device-train-batch-size", "2"
    )
    assert len(reference) == 6
    for stage in ("zero2", "zero3"):
        out, summary, losses = run(tmp_path, tiny_base_model, merged_tokenizer, stage, 2, "--deepspeed", stage)
        assert losses == pytest.approx(reference, abs=LOSS_TOLERANCE), stage
        assert summary["tokens"] == s1["tokens"] == 6 * 2 * 32
        same_adapter(single, out, atol=1e-5)
    # a ZeRO-3 run killed after checkpoint-3 resumes from its sharded checkpoint, bit-exactly
    shards = list((tmp_path / "zero3" / "checkpoints" / "checkpoint-3").glob("global_step3/zero_pp_rank_1_*"))
    assert shards, "ZeRO-3 checkpoints hold one shard per rank"
    cut = tmp_path / "zero3-cut"
    cut.mkdir()
    shutil.copytree(tmp_path / "zero3" / "checkpoints", cut / "checkpoints")
    shutil.rmtree(cut / "checkpoints" / "checkpoint-6")
    out, summary, losses = run(
        tmp_path, tiny_base_model, merged_tokenizer, "zero3-cut", 2, "--deepspeed", "zero3", "--resume"
    )
    assert summary["resumed_from"] == 3 and summary["steps"] == 6 and summary["tokens"] == 6 * 2 * 32
    assert losses == pytest.approx(reference, abs=LOSS_TOLERANCE)
    same_adapter(tmp_path / "zero3", out, atol=0.0)


def test_two_nodes_share_one_cache(tmp_path, tiny_base_model, merged_tokenizer):
    """The README's multi-node recipe on localhost: torchrun --nnodes 2 --node_rank 0/1 with a
    shared --cache-dir: only global rank 0 tokenizes, and the losses equal the 1-node runs'."""
    _, _, reference = run(
        tmp_path, tiny_base_model, merged_tokenizer, "single", 1, "--per-device-train-batch-size", "2"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "nodes"
    common = [
        torchrun,
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        "29537",
    ]
    args = ["-m", "zhllama", "pretrain", "--model", str(tiny_base_model), "--tokenizer", str(merged_tokenizer)]
    args += ["--data", str(data_path("corpus_zh.txt")), "--output", str(out), "--max-steps", "6", "--save-steps", "3"]
    args += ["--block-size", "32", "--lora-rank", "4", "--lora-dropout", "0", "--logging-steps", "1"]
    args += ["--learning-rate", "1e-3", "--cache-dir", str(tmp_path / "shared-cache")]
    args += ["--trainer-arg", "train_sampling_strategy=sequential"]
    nodes = [
        subprocess.Popen([*common, "--node_rank", str(r), *args], stderr=subprocess.PIPE, text=True, env=env)
        for r in (1, 0)
    ]
    errs = [p.communicate(timeout=600)[1] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], errs[1][-2000:] + errs[0][-2000:]
    assert "1 file(s) tokenized" in errs[1] and "0 file(s) tokenized, 1 from the cache" in errs[0]
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert [e["loss"] for e in state["log_history"] if "loss" in e] == pytest.approx(reference, abs=LOSS_TOLERANCE)
