"""Helpers for training tests: a task config preset that trains a tiny model in seconds."""

from __future__ import annotations

import pytest

from zhllama.core.training import PretrainConfig


@pytest.fixture
def tiny_cfg(tiny_train_settings):
    """`tiny_cfg(model, data, output=None, config=PretrainConfig, **fields)`: the task's config class with
    the tiny presets, `fields` (the task's own too, e.g. `block_size`) overriding them."""

    def make(model, data, output=None, config=PretrainConfig, **overrides):
        settings = tiny_train_settings(model, data, output)
        settings.update(overrides)
        return config(**settings)

    return make
