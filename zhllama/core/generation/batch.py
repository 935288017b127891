"""Batched generation: several prompts decoded together in one forward pass per step.

`DecodeBatch` is the one batched decoder: `zhllama predict` (`answer_batch`) fills it once and runs
it to the end, the server's scheduler (`core.generation.scheduler`) adds and removes rows between
steps (continuous batching). Rows are left-padded with an attention mask and position ids that
start at 0 for every row, over one KV cache, so each row is computed as if it ran alone. Rows that
join later are prefilled on their own (padded among themselves) and their cache is merged into the
running one, left-padded to a common width; finished rows are removed and the columns no row needs
any more are trimmed. Every row keeps its own `Sampler` (its own seeded generator) and its own
`Stopper`: a row's answer does not depend on which prompts it is batched with.
vLLM batches on its own (`generate_batch`: all of predict's prompts in one call); llama.cpp answers
the prompts one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.sampling import Sampler, greedy_tokens
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
    if callable(getattr(model, "generate_batch", None)) and runtime.decoder is None and len(prompts) > 1:
        return _engine_batched(model, prompts, fitted)
    if not can_batch(model) or len(prompts) == 1:
        out = []
        for ids, p in zip(prompts, fitted, strict=True):
            reply = runtime.reply(ids, p)
            reply.run()
            out.append(Answer(reply.text, reply.token_ids, reply.finish_reason, len(ids)))
        return out
    return _batched(model, prompts, fitted)


def _engine_batched(model, prompts: Sequence[Sequence[int]], params: Sequence[GenerationParams]) -> list[Answer]:
    """An engine that batches on its own (vLLM's `generate_batch`): every prompt in one call, each
    answer cut by its own `Stopper`, as `runtime.reply` would cut it."""
    stoppers = [Stopper(model.tokenizer, p, getattr(model, "extra_stops", ())) for p in params]
    answers = model.generate_batch(prompts, params, stoppers)
    out = []
    for prompt, ids, stopper in zip(prompts, answers, stoppers, strict=True):
        stopper.stream.finish()
        out.append(Answer(stopper.stream.text, list(ids), stopper.finish_reason or "stop", len(prompt)))
    return out


@dataclass(eq=False)
class Row:
    """One sequence in a `DecodeBatch`: its ids so far, its sampler and stop rule, its next logits."""

    prompt: list[int]
    sampler: Sampler
    stopper: Stopper
    owner: Any = None  # the caller's handle (the scheduler's ticket)
    sequence: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    logits: Any = None  # float32 [V]: the scores of the next token, set by `add` and `forward`
    finished: bool = False
    error: BaseException | None = None  # what stopped this row (its sampler failed), if anything

    def __post_init__(self):
        self.sequence = list(self.prompt)


class DecodeBatch:
    """Rows of one transformers model decoded together over a shared, left-padded KV cache."""

    def __init__(self, model):
        self.model = model
        self.rows: list[Row] = []
        self.cache = None
        self.mask = None  # long [B, W]: 1 where a cache column holds one of the row's tokens

    def __len__(self) -> int:
        return len(self.rows)

    def _forward(self, ids, mask, positions, cache):
        import torch

        auto_ntk = getattr(self.model, "auto_ntk", None)
        if auto_ntk is not None:
            auto_ntk.update(mask.shape[1])
        with torch.inference_mode():
            out = self.model.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1].float()

    def add(self, rows: Sequence[Row]) -> None:
        """Prefill `rows` (one padded forward) and merge them into the batch; each gets its logits."""
        import torch
        from transformers import DynamicCache

        if not rows:
            return
        hf, pad = self.model.model, self.model.tokenizer.pad_id
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt) :] = torch.tensor(row.prompt, dtype=torch.long)
            mask[i, width - len(row.prompt) :] = 1
        device = hf.get_input_embeddings().weight.device
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=hf.config)
        logits = self._forward(ids, mask, positions, cache)
        for i, row in enumerate(rows):
            row.logits = logits[i]
        if not self.rows:
            self.cache, self.mask = cache, mask
        else:
            self.cache, self.mask = _merge(self.cache, self.mask, cache, mask)
        self.rows.extend(rows)

    def sample(self) -> list[Row]:
        """Choose every row's next token (through its stop rule); returns the rows that finished.

        Plain greedy rows are chosen together (`sampling.greedy_tokens`, the same ids as each row's
        own `Sampler`); a row whose sampling fails finishes with the exception in `error`."""
        import torch

        done = []
        fast = [row for row in self.rows if row.sampler.plain_greedy]
        chosen = {}
        if fast:
            logits = torch.stack([row.logits for row in fast])
            tokens = greedy_tokens([row.sequence for row in fast], logits, [row.sampler.penalty for row in fast])
            chosen = {id(row): token for row, token in zip(fast, tokens, strict=True)}
        for row in self.rows:
            try:
                token = chosen[id(row)] if id(row) in chosen else row.sampler(row.sequence, row.logits)
            except Exception as exc:  # noqa: BLE001 - kept on the row for its owner
                row.error, row.finished = exc, True
                done.append(row)
                continue
            if row.stopper.is_end(token):
                row.finished = True
            else:
                row.stopper.record(token, row.logits)
                row.stopper.push(token)
                row.sequence.append(token)
                row.generated.append(token)
                row.finished = row.stopper.done
            if row.finished:
                done.append(row)
        return done

    def remove(self, rows: Sequence[Row]) -> None:
        """Take `rows` out of the batch (their cache rows too) and trim columns no row uses."""
        import torch

        gone = {id(r) for r in rows}
        keep = [i for i, r in enumerate(self.rows) if id(r) not in gone]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = mask.any(0).nonzero()
        start = int(used[0]) if used.numel() else 0
        self.mask = mask[:, start:]
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys.index_select(0, index)[..., start:, :]
                layer.values = layer.values.index_select(0, index)[..., start:, :]

    def forward(self) -> None:
        """Feed every row's last token in one step; each row gets the logits of its next token."""
        import torch

        if not self.rows:
            return
        device = self.mask.device
        ids = torch.tensor([[r.sequence[-1]] for r in self.rows], dtype=torch.long, device=device)
        positions = torch.tensor([[len(r.sequence) - 1] for r in self.rows], dtype=torch.long, device=device)
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=torch.long, device=device)], dim=1)
        logits = self._forward(ids, self.mask, positions, self.cache)
        for i, row in enumerate(self.rows):
            row.logits = logits[i]


def _merge(cache, mask, other, other_mask):
    """One cache holding the rows of `cache` then those of `other`, both left-padded to one width."""
    import torch
    from torch.nn.functional import pad

    width = max(mask.shape[1], other_mask.shape[1])

    def left(t, dim_from_end: int):
        missing = width - t.shape[-dim_from_end]
        if not missing:
            return t
        spec = [0, 0] * (dim_from_end - 1) + [missing, 0]
        return pad(t, spec)

    merged_mask = torch.cat([left(mask, 1), left(other_mask, 1)], dim=0)
    for layer, new in zip(cache.layers, other.layers, strict=True):
        if getattr(new, "keys", None) is None or not new.keys.numel():
            continue
        layer.keys = torch.cat([left(layer.keys, 2), left(new.keys, 2)], dim=0)
        layer.values = torch.cat([left(layer.values, 2), left(new.values, 2)], dim=0)
    return cache, merged_mask


def _batched(model, prompts: Sequence[Sequence[int]], params: Sequence[GenerationParams]) -> list[Answer]:
    extra = getattr(model, "extra_stops", ())
    rows = [
        Row(list(ids), Sampler(p), Stopper(model.tokenizer, p, extra)) for ids, p in zip(prompts, params, strict=True)
    ]
    batch = DecodeBatch(model)
    batch.add(rows)
    while batch.rows:
        batch.remove(batch.sample())
        batch.forward()
    answers = []
    for row in rows:
        if row.error is not None:
            raise row.error
        row.stopper.stream.finish()
        reason = row.stopper.finish_reason or "stop"
        answers.append(Answer(row.stopper.stream.text, row.generated, reason, len(row.prompt)))
    return answers
