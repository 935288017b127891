"""Byte-level BPE fixtures: SmolLM2's real tokenizer, a Chinese byte-level BPE trained on the shared
Wikipedia corpus (8000 tokens, the issue's figure), and their merge; built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared

CORPUS = ("corpus", "zh_wiki_cmrc2018_contexts.txt")

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "I'm can't won't 1,000,000 3.14159 2023-11-23",
    "def f(x):\n    return x**2  # square\n",
    "  leading spaces\tand tabs\n\nnew lines   ",
    "SELECT * FROM users WHERE id = 42; -- sql",
    '<html><body class="main">Hello, World!</body></html>',
    "",
    " ",
    "~!@#$%^&*()_+`-=[]{}|;':\",./<>?",
]


@pytest.fixture(scope="session")
def corpus_file() -> Path:
    return shared(*CORPUS)


@pytest.fixture(scope="session")
def corpus_lines(corpus_file) -> list[str]:
    return [line for line in corpus_file.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def smollm2_tokenizer(tmp_path_factory, smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct's tokenizer folder (tokenizer.json, config, chat template) as transformers
    rebuilds it from the real GGUF."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("smollm2") / "tokenizer"
    AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def zh_bpe(tmp_path_factory, corpus_file, smollm2_tokenizer) -> Path:
    """8000-token Chinese byte-level BPE trained with SmolLM2's pre-tokenizer on the shared corpus."""
    from zhllama.core import bpe

    out = tmp_path_factory.mktemp("zh_bpe") / "zh_bpe.json"
    bpe.train([corpus_file], 8000, out, base=smollm2_tokenizer)
    return out


@pytest.fixture(scope="session")
def merged_smollm2(tmp_path_factory, smollm2_tokenizer, zh_bpe) -> Path:
    from zhllama.core import bpe

    out = tmp_path_factory.mktemp("merged") / "smollm2_zh"
    bpe.merge(smollm2_tokenizer, [zh_bpe], out, pad_to_multiple_of=64)
    return out
