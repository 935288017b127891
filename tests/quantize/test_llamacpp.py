"""The GGUF files through llama.cpp itself (llama-cpp-python), when that extra is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from zhllama.core.loading.llamacpp import new_llama
from zhllama.core.quantize.gguf_export import write_gguf
from zhllama.core.tokenizer import ZhTokenizer

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'zhllama[llamacpp]')")

TEXTS = ["中国的首都是北京。", "我爱北京天安门，hello world 123", "  两个空格  and English"]


@pytest.mark.parametrize("qtype, atol", [("F32", 1e-3), ("F16", 2e-2), ("Q8_0", 5e-2)])
def test_llama_cpp_logits_and_tokens_match_hf(tmp_path, tiny_zh_model, qtype, atol):
    out = tmp_path / f"m-{qtype}.gguf"
    write_gguf(tiny_zh_model, out, qtype)
    tok = ZhTokenizer(tiny_zh_model)
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_zh_model)).eval()
    llm = new_llama(str(out), n_ctx=256, logits_all=True, verbose=False)
    try:
        for text in TEXTS:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True)
            assert ids == tok.encode(text, bos=True)
            llm.reset()
            llm.eval(ids)
            ours = np.asarray(llm.scores[: len(ids)])
            with torch.no_grad():
                ref = hf(torch.tensor([ids])).logits[0].numpy()
            assert np.abs(ours - ref).max() < atol
    finally:
        llm.close()


def test_k_quant_through_llama_cpp(tmp_path, tiny_zh_model, run_cli):
    from gguf import GGUFReader

    out = tmp_path / "m-q4km.gguf"
    code, _, err = run_cli("quantize", "gguf", "--model", tiny_zh_model, "--type", "Q4_K_M", "--output", out)
    assert code == 0, err
    assert GGUFReader(str(out)).fields["general.file_type"].parts[-1][0] == 15  # MOSTLY_Q4_K_M
    llm = new_llama(str(out), n_ctx=64, verbose=False)
    try:
        assert llm.tokenize("中国".encode(), add_bos=True) == ZhTokenizer(tiny_zh_model).encode("中国", bos=True)
    finally:
        llm.close()


def test_gguf_perplexity_through_llama_cpp_matches_hf(tmp_path, tiny_zh_model):
    from zhllama.core.perplexity import perplexity

    text = tmp_path / "t.txt"
    text.write_text("中国的首都是北京。长江是中国第一长河，黄河被称为母亲河。", encoding="utf-8")
    out = tmp_path / "m.gguf"
    write_gguf(tiny_zh_model, out, "F32")
    hf = perplexity(tiny_zh_model, text, context=16, stride=8)
    cpp = perplexity(out, text, context=16, stride=8)
    assert cpp.tokens_scored == hf.tokens_scored
    assert cpp.perplexity == pytest.approx(hf.perplexity, rel=1e-3)


ROPE_CASES = {
    "linear": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 64},
}


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_rope_scaled_model_matches_transformers_beyond_the_original_context(tmp_path, base_tokenizer, kind):
    """A model trained at 64 positions, scaled x4 to 256: llama.cpp reads the scaling from the GGUF keys."""
    import json

    from zhllama.core.tiny import TinyShape, build_tiny_llama

    shape = TinyShape(max_position_embeddings=64)
    model = build_tiny_llama(tmp_path / kind, tokenizer=base_tokenizer, shape=shape, seed=3)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / "model.safetensors"))
    for key in weights:
        if key.endswith(("q_proj.weight", "k_proj.weight")):
            weights[key] = weights[key] * 6  # sharp attention: positions (and so rope) matter
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((model / "config.json").read_text())
    config["rope_parameters"] = ROPE_CASES[kind]
    config["max_position_embeddings"] = 256
    (model / "config.json").write_text(json.dumps(config))
    write_gguf(model, tmp_path / "m.gguf", "F16")
    ids = torch.randint(3, 400, (1, 220), generator=torch.Generator().manual_seed(0))
    hf = AutoModelForCausalLM.from_pretrained(str(model)).eval()
    with torch.no_grad():
        ref = hf(ids).logits[0].numpy()
    llm = new_llama(str(tmp_path / "m.gguf"), n_ctx=256, logits_all=True, verbose=False)
    try:
        llm.eval(ids[0].tolist())
        ours = np.asarray(llm.scores[: ids.shape[1]])
    finally:
        llm.close()
    assert np.abs(ours[64:] - ref[64:]).max() < 1e-2  # positions beyond the original context
    assert np.abs(ours - ref).max() < 1e-2
    # without the scaling keys llama.cpp would run another model: the check can fail
    unscaled = AutoModelForCausalLM.from_pretrained(
        str(model), rope_parameters={"rope_type": "default", "rope_theta": 1e4}
    )
    with torch.no_grad():
        plain = unscaled(ids).logits[0].numpy()
    assert np.abs(plain[64:] - ref[64:]).max() > 1e-1


MIXED = [
    "I'm can't won't 1,000,000",
    "def f(x):\n    return x**2  # 平方",
    "中国的首都是北京。Hello, world! 123 4567",
    "  leading spaces\tand tabs\n\nnew lines",
    "emoji 🦙🚀 and 全角，标点！",
    "<|im_start|>user\n你好<|im_end|>",
]


def test_llama_cpp_tokenizes_a_byte_level_bpe_gguf_as_transformers(tmp_path, smollm2_gguf):
    """SmolLM2's tokenizer (pre-tokenizer 'smollm') on a tiny model: llama.cpp == transformers on mixed text."""
    from transformers import AutoTokenizer

    from zhllama.core.tiny import build_tiny_llama

    tok_dir = tmp_path / "tok"
    AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name).save_pretrained(str(tok_dir))
    model = build_tiny_llama(tmp_path / "m", tokenizer=tok_dir, seed=0)
    write_gguf(model, tmp_path / "m.gguf", "F16")
    hf = AutoTokenizer.from_pretrained(str(model))
    llm = new_llama(str(tmp_path / "m.gguf"), n_ctx=64, vocab_only=True, verbose=False)
    try:
        for text in MIXED:
            ours = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert ours == hf.encode(text, add_special_tokens=False), text
        assert len(llm.tokenize(MIXED[0].encode(), add_bos=False)) == 16
    finally:
        llm.close()
