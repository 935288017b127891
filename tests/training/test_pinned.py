"""Pinned regression values (as torchtune pins losses): the seeded tiny pretrain and sft runs.

A change in tokenization, data order, LoRA init, the loss or the optimizer moves these numbers.
If a change is intended, re-pin from the printed values and say why in the commit message.
"""

from __future__ import annotations

import pytest

from zhllama.core.assets import data_path
from zhllama.core.training import SftConfig, pretrain, sft

TOLERANCE = 1e-4
PRETRAIN = {"first_loss": 7.342265, "final_loss": 7.330533, "tokens": 6 * 2 * 32}
SFT = {"first_loss": 7.404599, "final_loss": 7.315360, "tokens": 1385}


def check(summary, pinned):
    got = {k: summary[k] for k in pinned}
    print("pinned values:", got)
    for key, value in pinned.items():
        assert summary[key] == pytest.approx(value, abs=TOLERANCE), (key, got)


def test_pinned_tiny_pretrain_losses(tiny_base_model, merged_tokenizer, tiny_cfg):
    cfg = tiny_cfg(
        tiny_base_model,
        data_path("corpus_zh.txt"),
        tokenizer=merged_tokenizer,
        per_device_train_batch_size=2,
        block_size=32,
        preprocessing_workers=1,
    )
    check(pretrain(cfg), PRETRAIN)


def test_pinned_tiny_sft_losses(tiny_zh_model, tiny_cfg):
    cfg = tiny_cfg(
        tiny_zh_model,
        data_path("instructions.json"),
        config=SftConfig,
        per_device_train_batch_size=2,
        template="llama2-zh",
        max_seq_length=128,
        preprocessing_workers=1,
    )
    check(sft(cfg), SFT)
