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
