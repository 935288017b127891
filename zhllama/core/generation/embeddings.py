"""Sentence embeddings from a causal LM, pooled as Chinese-LLaMA-Alpaca-2's API server pools them.

The mean of the last hidden state (after the final norm) over the real tokens, L2-normalised.
Each text is tokenized with BOS, as the reference's `tokenizer(input)` does. Batches are right
padded with an attention mask, so a text's vector does not depend on what it is batched with.
Needs a transformers model (the engine's `model` attribute).
"""

from __future__ import annotations

from collections.abc import Sequence

from zhllama.core.errors import UserError


def supports_embeddings(model) -> bool:
    return callable(getattr(getattr(model, "model", None), "forward", None))


def embed(model, batch: Sequence[Sequence[int]], batch_size: int = 8) -> list[list[float]]:
    """One unit vector per token-id sequence (length-sorted batches; output in input order)."""
    if not supports_embeddings(model):
        raise UserError("embeddings need the transformers engine (a HF model folder)")
    import torch

    hf = model.model
    device = hf.get_input_embeddings().weight.device
    vectors: list[list[float]] = [[] for _ in batch]
    order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
    pad = model.tokenizer.pad_id
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(batch[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : len(batch[i])] = torch.tensor(list(batch[i]), dtype=torch.long)
            mask[r, : len(batch[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            out = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1].float()
        weights = mask.unsqueeze(-1).float()
        mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        unit = torch.nn.functional.normalize(mean, p=2, dim=1)
        for r, i in enumerate(rows):
            vectors[i] = unit[r].cpu().tolist()
    return vectors
