"""Helpers for training tests: a TrainConfig preset that trains a tiny model in seconds."""

from __future__ import annotations

import pytest

from zhllama.core.training import TrainConfig


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(model, data, output=None, **overrides) -> TrainConfig:
        settings = dict(
            model=model,
            data=[data] if not isinstance(data, list) else data,
            output=output or tmp_path / "out",
            lora_rank=8,
            lora_alpha=16,
            lora_dropout=0.0,
            max_steps=6,
            logging_steps=1,
            save_steps=1000,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            lr_scheduler_type="constant",
            cache_dir=tmp_path / "cache",
            seed=1,
        )
        settings.update(overrides)
        return TrainConfig(**settings)

    return make
