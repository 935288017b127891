"""Shared set-up of the benchmarks: a merged Chinese tokenizer and a tiny model built from shipped data."""

from __future__ import annotations

from pathlib import Path

from zhllama.core.assets import data_path


def tiny_model(work: Path, shape) -> Path:
    """Train the base and Chinese SentencePiece models, merge them, build a tiny model of `shape`."""
    from zhllama.core import vocab
    from zhllama.core.tiny import build_tiny_llama

    base = work / "base_sp.model"
    vocab.train([data_path("corpus_en.txt")], 400, base, byte_fallback=True)
    zh = work / "zh.model"
    vocab.train([data_path("corpus_zh.txt")], 1200, zh)
    vocab.merge(base, [zh], work / "tok")
    return build_tiny_llama(work / "model", tokenizer=work / "tok", shape=shape)
