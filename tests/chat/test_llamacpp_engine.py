"""The llama.cpp engine: an F32 GGUF of the tiny model (written by zhllama) and the real SmolLM2 GGUF.

Skipped when llama-cpp-python is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest

from zhllama.core.engine import GenerationParams, open_model
from zhllama.core.errors import UserError
from zhllama.core.loading import ModelOptions

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")


@pytest.fixture(scope="module")
def gguf_path(tiny_zh_model, tmp_path_factory):
    from zhllama.core.quantize.gguf_export import write_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    write_gguf(tiny_zh_model, path, "F32")
    return path


@pytest.fixture(scope="module")
def gguf_model(gguf_path):
    model = open_model(ModelOptions(model=str(gguf_path), context_length=256))
    yield model
    model.close()


def test_gguf_matches_transformers(gguf_model, zh_model):
    ids = zh_model.tokenizer.encode("北京是中国的首都", bos=True)
    assert gguf_model.tokenizer.encode("北京是中国的首都", bos=True) == ids
    ours = gguf_model.next_token_logits([ids, ids[:3]])
    ref = zh_model.next_token_logits([ids, ids[:3]])
    assert ours.shape == ref.shape and (ours - ref).abs().max().item() < 1e-3


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_llamacpp_sampler_greedy_equals_transformers(gguf_model, zh_model, penalty):
    """llama.cpp's own sampler chain (penalty over prompt + answer, as transformers) picks the same ids."""
    ids = zh_model.tokenizer.encode("你好，北京", bos=True)
    params = GenerationParams(max_new_tokens=24, greedy=True, repetition_penalty=penalty)
    assert list(gguf_model.generate(ids, params)) == list(zh_model.generate(ids, params))


def test_seeded_sampling_is_reproducible(gguf_model, zh_model):
    ids = zh_model.tokenizer.encode("你好", bos=True)
    params = GenerationParams(max_new_tokens=20, temperature=1.5, top_k=0, top_p=1.0, seed=11)
    first, again = list(gguf_model.generate(ids, params)), list(gguf_model.generate(ids, params))
    other = list(gguf_model.generate(ids, GenerationParams(max_new_tokens=20, temperature=1.5, top_k=0, seed=12)))
    assert first == again and first != other


def test_letter_pieces_match_the_hf_tokenizer(gguf_model, zh_model):
    for piece in ("A", "B", "C", "D", "▁A", "▁D", "no-such-piece"):
        assert gguf_model.tokenizer.piece_to_id(piece) == zh_model.tokenizer.piece_to_id(piece)


def test_context_length_is_what_the_buffers_hold(gguf_path):
    """llama.cpp rounds n_ctx 120 up to 256; the engine must keep 120 (its token buffer's size)."""
    model = open_model(ModelOptions(model=str(gguf_path), context_length=120))
    try:
        assert model.context_length == 120 and model.llm.n_ctx() >= 120
        with pytest.raises(UserError, match="longer than the context \\(120 tokens\\)"):
            model.session().feed([1] * 121)
        out = list(model.generate([1] * 110, GenerationParams(max_new_tokens=50, greedy=True)))
        assert len(out) <= 10
    finally:
        model.close()


def test_gguf_speculative_with_itself(gguf_model, zh_model):
    from zhllama.core.generation.speculative import SpeculativeDecoder

    ids = zh_model.tokenizer.encode("你好", bos=True)
    params = GenerationParams(max_new_tokens=15, greedy=True)
    plain = list(zh_model.generate(ids, params))
    decoder = SpeculativeDecoder(zh_model, gguf_model, 4)  # llama.cpp drafts, transformers verifies
    assert list(decoder.generate(ids, params)) == plain


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lora": ["x"]}, "--lora"),
        ({"load": "4bit"}, "--load"),
        ({"rope_scaling": "ntk"}, "--rope-scaling"),
        ({"device": "cpu", "gpu_layers": "all"}, "--gpu-layers all: contradicts --device cpu"),
    ],
)
def test_gguf_rejects_options_that_cannot_apply(gguf_path, options, message):
    with pytest.raises(UserError, match=message):
        open_model(ModelOptions(model=str(gguf_path), **options))


def test_real_chat_model_batched_prompt_and_template(smollm2_gguf):
    """SmolLM2-135M-Instruct (ChatML): multi-token prompts evaluate (AMX-safe load), specials parse."""
    model = open_model(ModelOptions(model=str(smollm2_gguf), context_length=512))
    try:
        tok = model.tokenizer
        assert "<|im_start|>" in tok.chat_template
        prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        ids = tok.encode(prompt, special=True)
        assert len(ids) == 16 and len(tok.encode(prompt)) > len(ids)  # markers are single special tokens
        im_end = tok.encode("<|im_end|>", special=True)
        params = GenerationParams(max_new_tokens=32, greedy=True, repetition_penalty=1.0, stop_token_ids=tuple(im_end))
        assert tok.decode(list(model.generate(ids, params))) == "The capital of France is Paris."
    finally:
        model.close()


def test_tokens_longer_than_32_bytes_decode(smollm2_gguf):
    """llama-cpp-python's `detokenize` drops pieces over 32 bytes; the engine's decode keeps them
    (SmolLM2 has single tokens for long runs of spaces, as code indentation produces)."""
    model = open_model(ModelOptions(model=str(smollm2_gguf), context_length=128))
    try:
        tok = model.tokenizer
        text = "def f():\n" + " " * 48 + "return 1"
        ids = tok.encode(text)
        assert max(len(tok.token_bytes(i)) for i in ids) > 32  # the case llama-cpp-python loses
        assert tok.decode(ids) == text
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode()
    finally:
        model.close()
