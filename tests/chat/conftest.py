"""Fixtures for chat/serve tests: the loaded tiny model (once per session) and a draft model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def zh_model(tiny_zh_model):
    from zhllama.core.engine import open_model

    model = open_model(tiny_zh_model)
    yield model
    model.close()


@pytest.fixture(scope="session")
def draft_model_dir(artifacts, merged_tokenizer):
    """A smaller LLaMA with another seed that shares the Chinese tokenizer (a speculative draft)."""
    from zhllama.core.tiny import TinyShape, build_tiny_llama

    return build_tiny_llama(
        artifacts / "tiny_zh_draft", tokenizer=merged_tokenizer, seed=7, shape=TinyShape(num_hidden_layers=1)
    )
