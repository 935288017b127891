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
def align_cfg(tmp_path):
    def make(cls, model, data, output=None, **overrides):
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
            template="none",
            max_seq_length=64,
        )
        settings.update(overrides)
        return cls(**settings)

    return make
