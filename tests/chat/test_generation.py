"""Decoding pieces: RoPE scaling frequencies, stop handling, history budget, speculative decoding."""

from __future__ import annotations

import pytest
import torch

from zhllama.core.engine import GenerationParams, open_model
from zhllama.core.errors import UserError
from zhllama.core.generation import rope
from zhllama.core.generation.history import ChatHistory
from zhllama.core.generation.speculative import SpeculativeDecoder
from zhllama.core.generation.stopping import TextStream
from zhllama.core.loading import ModelOptions
from zhllama.core.templates import get_template

DIM, BASE = 16, 10000.0  # the tiny models: hidden 64 / 4 heads


def _by_hand(base: float, dim: int = DIM) -> list[float]:
    return [1.0 / base ** (2 * i / dim) for i in range(dim // 2)]


def test_inverse_frequencies_by_hand():
    assert rope.inv_freq(DIM, BASE).tolist() == pytest.approx(_by_hand(BASE), rel=1e-6)
    assert rope.ntk_base(BASE, 2.0, DIM) == BASE * 2.0 ** (16 / 14)
    assert rope.auto_alpha(2048, 2048) is None
    assert rope.auto_alpha(4096, 2048) == 3.0  # L / (P/2) - 1
    assert rope.auto_alpha(2049, 2048) == pytest.approx(1.0009765625)


def _rotary(model):
    return model.model.get_decoder().rotary_emb


def test_ntk_fixed_alpha_sets_the_base(tiny_zh_model):
    model = open_model(ModelOptions(model=str(tiny_zh_model), rope_scaling="ntk", rope_factor="4"))
    expected = torch.tensor(_by_hand(BASE * 4.0 ** (DIM / (DIM - 2))))
    assert torch.allclose(_rotary(model).inv_freq, expected, rtol=1e-6, atol=0)
    assert model.context_length == 4 * 2048


def test_linear_and_yarn_follow_the_config(tiny_zh_model):
    linear = open_model(ModelOptions(model=str(tiny_zh_model), rope_scaling="linear", rope_factor="2"))
    assert torch.allclose(_rotary(linear).inv_freq, torch.tensor(_by_hand(BASE)) / 2, rtol=1e-6, atol=0)
    dynamic = open_model(ModelOptions(model=str(tiny_zh_model), rope_scaling="dynamic", rope_factor="2"))
    assert dynamic.model.config.rope_parameters["rope_type"] == "dynamic" and dynamic.context_length == 4096
    assert torch.allclose(_rotary(dynamic).inv_freq, torch.tensor(_by_hand(BASE)), rtol=1e-6, atol=0)  # until L > P
    yarn = open_model(ModelOptions(model=str(tiny_zh_model), rope_scaling="yarn", rope_factor="4"))
    inv = _rotary(yarn).inv_freq
    plain = torch.tensor(_by_hand(BASE))
    assert inv[0] == pytest.approx(plain[0].item(), rel=1e-6)  # high frequencies are kept
    assert inv[-1] == pytest.approx(plain[-1].item() / 4, rel=1e-6)  # the lowest is interpolated by F


def test_ntk_auto_changes_only_beyond_trained_context(tiny_zh_model, zh_model):
    model = open_model(ModelOptions(model=str(tiny_zh_model), rope_scaling="ntk", rope_factor="auto"))
    ids = zh_model.tokenizer.encode("北京是中国的首都", bos=True)
    # short inputs: identical to the unscaled model
    assert torch.equal(model.next_token_logits([ids]), zh_model.next_token_logits([ids]))
    model.auto_ntk.update(3000)  # P = 2048: alpha = 3000/1024 - 1
    expected = torch.tensor(_by_hand(BASE * (3000 / 1024 - 1) ** (DIM / (DIM - 2))))
    assert torch.allclose(_rotary(model).inv_freq, expected, rtol=1e-6, atol=0)
    model.auto_ntk.update(100)
    assert torch.allclose(_rotary(model).inv_freq, torch.tensor(_by_hand(BASE)), rtol=1e-6, atol=0)


def test_rope_flag_errors():
    with pytest.raises(UserError, match="unknown method"):
        rope.parse_factor("ntk2", "2")
    with pytest.raises(UserError, match="only ntk"):
        rope.parse_factor("yarn", "auto")
    with pytest.raises(UserError, match="> 0"):
        rope.parse_factor("linear", "-1")


class CharTokenizer:
    """One character per id, so stop handling is easy to reason about."""

    eos_id = 0

    def __init__(self, alphabet: str):
        self.alphabet = "\0" + alphabet

    def decode(self, ids):
        return "".join(self.alphabet[i] for i in ids if i)


def test_text_stream_holds_back_partial_stop_strings():
    tok = CharTokenizer("ab<|im_end|>c")
    stream = TextStream(tok, ["<|im_end|>", "</s>"])
    ids = [tok.alphabet.index(c) for c in "ab<|im_"]
    shown = "".join(stream.push(i) for i in ids)
    assert shown == "ab"  # "<|im_" may still become the end marker
    rest = [tok.alphabet.index(c) for c in "end|>c"]
    shown += "".join(stream.push(i) for i in rest)
    assert shown == "ab" and stream.stopped and stream.text == "ab"
    assert stream.finish() == ""
    other = TextStream(tok, ["<|im_end|>"])
    text = "".join(other.push(tok.alphabet.index(c)) for c in "a<b") + other.finish()
    assert text == "a<b" and not other.stopped  # a false alarm is released


def test_template_end_marker_stops_generation(zh_model):
    """No runaway text: with ChatML, nothing after <|im_end|> is produced or shown."""
    from zhllama.core.generation.runtime import ChatRuntime

    runtime = ChatRuntime(zh_model, get_template("chatml"), "m")
    ids = zh_model.tokenizer.encode("北京", bos=True)
    params = GenerationParams(max_new_tokens=30, greedy=True)
    free = zh_model.tokenizer.decode(list(zh_model.generate(ids, params)))
    marker = free[3:5]  # pretend part of the free text is the template's end marker
    runtime.template.stop_strings = (marker,)
    reply = runtime.reply(ids, params)
    shown = "".join(reply)
    assert shown == reply.text == free[: free.index(marker)]
    assert len(reply.token_ids) < 30 and reply.finish_reason == "stop"


def test_history_drops_oldest_turns_first(zh_model):
    from zhllama.core.generation.runtime import ChatRuntime

    history = ChatHistory(ChatRuntime(zh_model, get_template("llama2-zh"), "m").prompt_ids, budget=10_000)
    for i in range(6):
        history.add(f"问题{i}" * 5, f"回答{i}" * 5)
    full = len(history.prompt_ids("最后"))
    history.budget = full - 1
    ids = history.prompt_ids("最后")
    assert len(ids) <= full - 1 and history.dropped == 1
    assert [q for q, _ in history.turns] == [f"问题{i}" * 5 for i in range(1, 6)]
    text = zh_model.tokenizer.decode(ids)
    assert "问题0" not in text and "问题1" in text and text.rstrip().endswith("最后 [/INST]")


def _noisy_copy(src, dst, scale: float):
    """The target's weights plus noise: a draft that agrees often but not always."""
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    model.save_pretrained(dst)
    ZhTokenizer(src).save(dst)
    return dst


@pytest.mark.parametrize("draft_k", ["auto", "3"])
def test_speculative_greedy_is_identical(zh_model, draft_model_dir, tiny_zh_model, tmp_path, draft_k):
    ids = zh_model.tokenizer.encode("北京是中国的首都", bos=True)
    params = GenerationParams(max_new_tokens=40, greedy=True)
    plain = list(zh_model.generate(ids, params))
    rates = []
    for draft_dir in (draft_model_dir, _noisy_copy(tiny_zh_model, tmp_path / "noisy", 0.004), tiny_zh_model):
        decoder = SpeculativeDecoder(zh_model, open_model(draft_dir), draft_k)
        assert list(decoder.generate(ids, params)) == plain
        stats = decoder.stats
        assert stats.emitted == len(plain) and stats.accepted <= stats.proposed
        assert stats.target_passes == len(plain) - stats.accepted
        rates.append(stats.acceptance_rate)
    # self-draft: (nearly) all accepted (a chunked forward pass may break a near-tie differently); noisy: in between
    assert rates[-1] > 0.9 and rates[0] < rates[1] < rates[-1]


def test_speculative_stats_cli(run_cli, tiny_zh_model, draft_model_dir):
    code, out, err = run_cli(
        "chat",
        "-m",
        tiny_zh_model,
        "--draft-model",
        draft_model_dir,
        "--greedy",
        "--max-new-tokens",
        "12",
        "--stats",
        "--prompt",
        "你好",
    )
    plain_code, plain, _ = run_cli(
        "chat", "-m", tiny_zh_model, "--greedy", "--max-new-tokens", "12", "--prompt", "你好"
    )
    assert code == plain_code == 0 and out == plain
    assert "draft accepted" in err and "tokens/s" in err


def test_answer_never_runs_past_the_context(zh_model, monkeypatch):
    from zhllama.core.generation.runtime import ChatRuntime

    runtime = ChatRuntime(zh_model, get_template("none"), "m")
    ids = runtime.completion_ids("北京是中国的首都")
    monkeypatch.setattr(zh_model, "context_length", len(ids) + 3)
    reply = runtime.reply(ids, GenerationParams(max_new_tokens=50, greedy=True))
    reply.run()
    assert len(reply.token_ids) == 3 and reply.finish_reason == "length"
    monkeypatch.setattr(zh_model, "context_length", len(ids))
    with pytest.raises(UserError, match="context holds"):
        runtime.reply(ids, GenerationParams())


def test_speculative_sampling_keeps_the_target_distribution():
    """The rejection rule: whatever the draft proposes, tokens come out distributed as p."""
    from zhllama.core.generation.sampling import Sampler
    from zhllama.core.generation.speculative import verify

    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    q = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.3])  # a poor draft
    sampler = Sampler(GenerationParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0))
    proposer = torch.Generator().manual_seed(1)
    trials, counts, accepted = 20000, torch.zeros(5), 0
    for _ in range(trials):
        proposal = int(torch.multinomial(q, 1, generator=proposer))
        token, ok = verify(sampler, p.log(), proposal, q)
        counts[token] += 1
        accepted += ok
    assert (counts / trials - p).abs().max().item() < 0.015  # 4 standard errors
    assert accepted / trials == pytest.approx(float(torch.minimum(p, q).sum()), abs=0.015)  # sum min(p, q)


def test_speculative_sampling_runs_and_is_seeded(zh_model):
    ids = zh_model.tokenizer.encode("你好", bos=True)
    params = GenerationParams(max_new_tokens=20, temperature=0.8, top_k=0, top_p=1.0, seed=3)
    first = SpeculativeDecoder(zh_model, zh_model, 4)
    out = list(first.generate(ids, params))
    assert len(out) == 20 and list(SpeculativeDecoder(zh_model, zh_model, 4).generate(ids, params)) == out
    assert first.stats.acceptance_rate > 0.9  # a self-draft: p == q up to float noise, so (almost) all accepted
