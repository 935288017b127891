"""`--rope-scaling ntk --rope-factor auto|F` composes with the model's own scaling (CLA2's rule).

The expected frequencies are written out here from Chinese-LLaMA-Alpaca-2's
attn_and_long_ctx_patches.py: positions are divided by the model's linear factor, and beyond the
trained length P the base becomes base * alpha^(d/(d-2)) with alpha = L / (P/2) - 1.
"""

from __future__ import annotations

import pytest
import torch

from zhllama.core.errors import UserError
from zhllama.core.generation import rope

DIM, BASE, P = 16, 10000.0, 256


def cla2_inv_freq(seq_len: int, scaling_factor: float, alpha_fixed: float | None = None) -> torch.Tensor:
    """CLA2's frequencies (as multipliers of the position index) at sequence length `seq_len`."""
    base = BASE
    if alpha_fixed is not None:
        base = BASE * alpha_fixed ** (DIM / (DIM - 2))
    elif seq_len > P:
        alpha = seq_len / (P / 2) - 1
        base = BASE * alpha ** (DIM / (DIM - 2))
    plain = [1.0 / base ** (2 * i / DIM) for i in range(DIM // 2)]
    return torch.tensor(plain, dtype=torch.float64) / scaling_factor  # t / scaling_factor


def tiny_config(rope_parameters):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=P,
        rope_parameters=rope_parameters,
    )


def build(rope_parameters, method, factor):
    from transformers import LlamaForCausalLM

    config = tiny_config(rope_parameters)
    plan = rope.configure(config, method, factor)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return model, plan


LINEAR4 = {"rope_type": "linear", "factor": 4.0, "rope_theta": BASE}
PLAIN = {"rope_type": "default", "rope_theta": BASE}


@pytest.mark.parametrize("own, factor", [(LINEAR4, 4.0), (PLAIN, 1.0)], ids=["linear_x4", "unscaled"])
def test_ntk_auto_follows_cla2_on_both_sides_of_the_trained_length(own, factor):
    model, plan = build(own, "ntk", "auto")
    auto = rope.AutoNTK(model.model.rotary_emb, plan)
    for length in (1, 100, P - 1, P, P + 1, 300, 512, 1000, 4 * P):
        auto.update(length)
        got = model.model.rotary_emb.inv_freq.double()
        torch.testing.assert_close(got, cla2_inv_freq(length, factor), rtol=1e-6, atol=0)
    auto.update(50)  # back within P: exactly the model as configured
    assert torch.equal(model.model.rotary_emb.inv_freq, auto.original)


def test_ntk_auto_logits_equal_a_model_built_with_cla2_frequencies():
    model, plan = build(LINEAR4, "ntk", "auto")
    auto = rope.AutoNTK(model.model.rotary_emb, plan)
    ids = torch.randint(0, 64, (1, 400), generator=torch.Generator().manual_seed(1))
    auto.update(400)
    alpha = 400 / (P / 2) - 1
    reference, _ = build({**LINEAR4, "rope_theta": BASE * alpha ** (DIM / (DIM - 2))}, None, None)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)


def test_fixed_ntk_composes_with_linear():
    model, plan = build(LINEAR4, "ntk", "2")
    assert model.config.rope_parameters["rope_type"] == "linear" and model.config.rope_parameters["factor"] == 4.0
    torch.testing.assert_close(model.model.rotary_emb.inv_freq.double(), cla2_inv_freq(0, 4.0, 2.0), rtol=1e-6, atol=0)
    assert plan.context_length == 2 * P


def test_linear_on_linear_multiplies_and_other_pairs_are_refused():
    model, plan = build(LINEAR4, "linear", "2")
    assert model.config.rope_parameters["factor"] == 8.0 and plan.context_length == 2 * P
    torch.testing.assert_close(model.model.rotary_emb.inv_freq.double(), cla2_inv_freq(0, 8.0, 1.0), rtol=1e-6, atol=0)
    for method in ("yarn", "dynamic"):
        with pytest.raises(UserError, match=r"already has rope scaling linear x4.0; a second scaling would replace it"):
            rope.configure(tiny_config(LINEAR4), method, "2")
    dynamic = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": BASE}
    with pytest.raises(UserError, match="already has rope scaling dynamic"):
        rope.configure(tiny_config(dynamic), "ntk", "auto")
