"""Helpers for alignment tests: preference files and configs that train a tiny model in seconds."""

from __future__ import annotations

import json

import pytest


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def separable_pairs(tmp_path):
    """Pairs a model can tell apart by one word: the chosen answer says 'good', the rejected 'bad'."""
    topics = ["the cat", "the dog", "a tree", "the sea", "a house", "the sun", "a bird", "the road", "a book", "rain"]
    records = []
    for i, topic in enumerate(topics * 2):
        records.append(
            {
                "prompt": f"What do you think of {topic}? ({i})",
                "chosen": f"It is good, {topic} is good.",
                "rejected": f"It is bad, {topic} is bad.",
            }
        )
    return write_jsonl(tmp_path / "pairs.jsonl", records)


@pytest.fixture
def align_cfg(tiny_train_settings):
    def make(cls, model, data, output=None, **overrides):
        settings = {**tiny_train_settings(model, data, output), "template": "none", "max_seq_length": 64}
        del settings["cache_dir"]  # rm/dpo/ppo tokenize in process: no tokenized-data cache to point at
        settings.update(overrides)
        return cls(**settings)

    return make
