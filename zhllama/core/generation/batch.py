"""Batched generation: several prompts decoded together in one forward pass per step.

The prompts are left-padded with an attention mask and position ids that start at 0 for every row,
over one KV cache, so each row is computed as if it ran alone. Every row keeps its own `Sampler`
(its own seeded generator) and its own `Stopper`: a row's answer does not depend on which prompts
it is batched with, and a finished row stops being sampled while the others go on.
Models without a batched forward (llama.cpp, vLLM) answer the prompts one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.sampling import Sampler
from zhllama.core.generation.stopping import Stopper


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int


def can_batch(model) -> bool:
    return callable(getattr(getattr(model, "model", None), "forward", None))


def answer_batch(runtime, prompts: Sequence[Sequence[int]], params: Sequence[GenerationParams]) -> list[Answer]:
    """Answers to `prompts` (token ids, template applied), row i decoded with `params[i]`."""
    from zhllama.core.generation.respond import with_template_stops

    model = runtime.model
    fitted = []
    for ids, p in zip(prompts, params, strict=True):
        room = model.context_length - len(ids)
        fitted.append(
            with_template_stops(
                replace(p, max_new_tokens=min(p.max_new_tokens, room)), runtime.template, model.tokenizer
            )
        )
    if not can_batch(model) or len(prompts) == 1:
        out = []
        for ids, p in zip(prompts, fitted, strict=True):
            reply = runtime.reply(ids, p)
            reply.run()
            out.append(Answer(reply.text, reply.token_ids, reply.finish_reason, len(ids)))
        return out
    return _batched(model, prompts, fitted)


def _batched(model, prompts: Sequence[Sequence[int]], params: Sequence[GenerationParams]) -> list[Answer]:
    import torch
    from transformers import DynamicCache

    hf, tokenizer = model.model, model.tokenizer
    rows = len(prompts)
    width = max(len(p) for p in prompts)
    ids = torch.full((rows, width), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for r, prompt in enumerate(prompts):
        ids[r, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[r, width - len(prompt) :] = 1
    device = hf.get_input_embeddings().weight.device
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    samplers = [Sampler(p) for p in params]
    stoppers = [Stopper(tokenizer, p, getattr(model, "extra_stops", ())) for p in params]
    sequences = [list(p) for p in prompts]
    generated: list[list[int]] = [[] for _ in prompts]
    alive = [True] * rows
    cache = DynamicCache(config=hf.config)
    auto_ntk = getattr(model, "auto_ntk", None)
    step_input, step_positions = ids, positions
    while True:
        if auto_ntk is not None:
            auto_ntk.update(mask.shape[1])
        with torch.inference_mode():
            out = hf(
                input_ids=step_input,
                attention_mask=mask,
                position_ids=step_positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        logits = out.logits[:, -1].float()
        chosen = []
        for r in range(rows):
            token = tokenizer.pad_id
            if alive[r]:
                candidate = samplers[r](sequences[r], logits[r])
                if stoppers[r].is_end(candidate):
                    alive[r] = False
                else:
                    token = candidate
                    stoppers[r].push(token)
                    sequences[r].append(token)
                    generated[r].append(token)
                    alive[r] = not stoppers[r].done
            chosen.append(token)
        if not any(alive):
            break
        step_input = torch.tensor(chosen, dtype=torch.long, device=device).unsqueeze(1)
        step_positions = step_positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((rows, 1), dtype=torch.long, device=device)], dim=1)
    answers = []
    for r in range(rows):
        stoppers[r].stream.finish()
        reason = stoppers[r].finish_reason or "stop"
        answers.append(Answer(stoppers[r].stream.text, generated[r], reason, len(prompts[r])))
    return answers
