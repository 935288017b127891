"""Classifier-free guidance: token for token what transformers' `generate(guidance_scale=...)` picks."""

from __future__ import annotations

import pytest

from zhllama.core.engine import GenerationParams
from zhllama.core.errors import UserError
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import Message, get_template


def _reference(model, prompt_ids, negative_ids, scale, penalty, n):
    import torch

    kwargs = {}
    if negative_ids is not None:
        kwargs["negative_prompt_ids"] = torch.tensor([negative_ids])
    out = model.model.generate(
        torch.tensor([prompt_ids]),
        max_new_tokens=n,
        do_sample=False,
        guidance_scale=scale,
        repetition_penalty=penalty,
        eos_token_id=None,
        pad_token_id=0,
        **kwargs,
    )
    return out[0, len(prompt_ids) :].tolist()


@pytest.mark.parametrize(
    ("scale", "penalty", "negative"), [(1.5, 1.0, "写一首诗"), (3.0, 1.1, None), (0.1, 1.0, "你好")]
)
def test_greedy_cfg_equals_transformers_generate(zh_model, scale, penalty, negative):
    runtime = ChatRuntime(zh_model, get_template("llama2-zh"), "m")
    prompt = runtime.prompt_ids([Message("user", "介绍一下北京")])
    guidance = runtime.guidance(scale, negative)
    params = GenerationParams(max_new_tokens=12, greedy=True, repetition_penalty=penalty)
    reply = runtime.reply(prompt, params, guidance=guidance)
    reply.run()
    negative_ids = runtime.prompt_ids([Message("user", negative)]) if negative else None
    expected = _reference(zh_model, prompt, negative_ids, scale, penalty, len(reply.token_ids))
    assert reply.token_ids == expected
    plain = runtime.reply(prompt, params)
    plain.run()
    assert plain.token_ids != reply.token_ids  # guidance changed the answer


def test_cfg_options_are_checked(zh_model):
    runtime = ChatRuntime(zh_model, get_template("llama2-zh"), "m")
    assert runtime.guidance(None) is None and runtime.guidance(1.0, "x") is None  # scale 1: no guidance
    with pytest.raises(UserError, match="--guidance-scale: must be in"):
        runtime.guidance(-1.0)
    with pytest.raises(UserError, match="--negative-prompt: give --guidance-scale too"):
        runtime.guidance(None, "x")


def test_cfg_cli(run_cli, tiny_zh_model, zh_model):
    code, out, err = run_cli(
        "chat",
        "-m",
        tiny_zh_model,
        "--greedy",
        "--max-new-tokens",
        "8",
        "--template",
        "llama2-zh",
        "--guidance-scale",
        "2",
        "--negative-prompt",
        "写一首诗",
        "--prompt",
        "介绍一下北京",
    )
    assert code == 0, err
    runtime = ChatRuntime(zh_model, get_template("llama2-zh"), "m")
    prompt = runtime.prompt_ids([Message("user", "介绍一下北京")])
    reply = runtime.reply(prompt, GenerationParams(max_new_tokens=8, greedy=True), runtime.guidance(2.0, "写一首诗"))
    assert out == reply.run() + "\n"
