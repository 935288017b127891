"""Helpers for training tests: a TrainConfig preset that trains a tiny model in seconds."""

from __future__ import annotations

import pytest

from zhllama.core.training import TrainConfig


@pytest.fixture
def tiny_cfg(tiny_train_settings):
    def make(model, data, output=None, **overrides) -> TrainConfig:
        settings = tiny_train_settings(model, data, output)
        settings.update(overrides)
        return TrainConfig(**settings)

    return make
