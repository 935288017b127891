"""The llama.cpp engine on an F32 GGUF of the tiny model, written by `zhllama.core.quantize`.

Skipped when llama-cpp-python is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest

from zhllama.core.engine import GenerationParams, LoadOptions, open_model
from zhllama.core.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")


@pytest.fixture(scope="module")
def gguf_model(tiny_zh_model, tmp_path_factory):
    from zhllama.core.quantize.gguf_export import write_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    write_gguf(tiny_zh_model, path, "F32")
    model = open_model(path, options=LoadOptions(context_length=256))
    yield model
    model.close()


def test_gguf_matches_transformers(gguf_model, zh_model):
    ids = zh_model.tokenizer.encode("北京是中国的首都", bos=True)
    assert gguf_model.tokenizer.encode("北京是中国的首都", bos=True) == ids
    ours = gguf_model.next_token_logits([ids, ids[:3]])
    ref = zh_model.next_token_logits([ids, ids[:3]])
    assert ours.shape == ref.shape and (ours - ref).abs().max().item() < 1e-3
    params = GenerationParams(max_new_tokens=20, greedy=True)
    assert list(gguf_model.generate(ids, params)) == list(zh_model.generate(ids, params))


def test_gguf_speculative_with_itself(gguf_model, zh_model):
    from zhllama.core.generation.speculative import SpeculativeDecoder

    ids = zh_model.tokenizer.encode("你好", bos=True)
    params = GenerationParams(max_new_tokens=15, greedy=True)
    plain = list(gguf_model.generate(ids, params))
    decoder = SpeculativeDecoder(zh_model, gguf_model, 4)  # llama.cpp drafts, transformers verifies
    assert list(decoder.generate(ids, params)) == plain


def test_gguf_rejects_transformers_only_options(gguf_model):
    with pytest.raises(UserError, match="--lora"):
        open_model(gguf_model.path, options=LoadOptions(lora=["x"]))
