"""The tiny-model fixture is a real, seeded, loadable LLaMA checkpoint."""

from __future__ import annotations

import time

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from zhllama.core.tiny import build_tiny_llama
from zhllama.core.tokenizer import ZhTokenizer


def test_tiny_model_is_fast_seeded_and_loads(tmp_path, merged_tokenizer):
    start = time.perf_counter()
    a = build_tiny_llama(tmp_path / "a", tokenizer=merged_tokenizer, seed=7)
    elapsed = time.perf_counter() - start
    b = build_tiny_llama(tmp_path / "b", tokenizer=merged_tokenizer, seed=7)
    c = build_tiny_llama(tmp_path / "c", tokenizer=merged_tokenizer, seed=8)
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["model.embed_tokens.weight"], wc["model.embed_tokens.weight"])
    model = AutoModelForCausalLM.from_pretrained(str(a))
    tok = ZhTokenizer(a)
    assert model.config.vocab_size == len(tok)
    assert model.config.bos_token_id == tok.bos_id == 1
    ids = torch.tensor([tok.encode("你好，世界", bos=True)])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))
    print(f"tiny model built in {elapsed:.2f}s")


def test_tiny_model_cli(run_cli, tmp_path, base_tokenizer):
    code, out, err = run_cli(
        "--json", "tiny-model", "--tokenizer", base_tokenizer, "--output", tmp_path / "m", "--layers", "1"
    )
    assert code == 0, err
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert model.config.num_hidden_layers == 1
