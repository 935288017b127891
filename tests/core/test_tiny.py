"""The tiny-model fixture is a real, seeded, loadable LLaMA checkpoint."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from zhllama.core.tiny import build_tiny_llama
from zhllama.core.tokenizer import ZhTokenizer


def test_tiny_model_is_seeded_small_and_loads(tmp_path, merged_tokenizer):
    a = build_tiny_llama(tmp_path / "a", tokenizer=merged_tokenizer, seed=7)
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
    # small enough for a test to build and run in well under a second: 2 layers of width 64
    vocab = len(tok)
    per_layer = 4 * 64 * 64 // 2 + 2 * 64 * 64 // 2 + 3 * 64 * 192 + 2 * 64  # q,o + k,v (2 kv heads) + mlp + norms
    assert sum(p.numel() for p in model.parameters()) == 2 * vocab * 64 + 2 * per_layer + 64


def test_tiny_model_layers_have_real_model_widths(tmp_path, merged_tokenizer):
    """Every linear width is a multiple of 32 (bitsandbytes' packed CPU 4-bit kernels need it)."""
    model = AutoModelForCausalLM.from_pretrained(str(build_tiny_llama(tmp_path / "m", tokenizer=merged_tokenizer)))
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    assert linears and all(m.out_features % 32 == 0 and m.in_features % 64 == 0 for m in linears)


def test_tiny_model_cli(run_cli, tmp_path, base_tokenizer):
    code, out, err = run_cli(
        "--json", "tiny-model", "--tokenizer", base_tokenizer, "--output", tmp_path / "m", "--layers", "1"
    )
    assert code == 0, err
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert model.config.num_hidden_layers == 1
