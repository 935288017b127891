"""Classifier-free guidance (CFG) sampling, as Chinese-LLaMA-Alpaca-2's `inference_hf.py` does it.

The guided scores are transformers' own: `UnbatchedClassifierFreeGuidanceLogitsProcessor`, which
runs the model a second time on the negative prompt (its own KV cache) and returns
`scale * (log p(x|prompt) - log p(x|negative)) + log p(x|negative)`. It comes first in the
processor chain, as in `model.generate(guidance_scale=..., negative_prompt_ids=...)`, so a seeded
or greedy run here picks the tokens `generate` would. Without a negative prompt the unconditional
context is the prompt's last token (transformers' default). Only the transformers engine has the
module this needs; speculative decoding cannot be combined with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zhllama.core.errors import UserError

MAX_SCALE = 100.0


def check_scale(scale: float | None, option: str = "--guidance-scale") -> None:
    if scale is not None and not (0 < scale <= MAX_SCALE):
        raise UserError(f"{option}: must be in (0, {MAX_SCALE:g}], got {scale}")


@dataclass(frozen=True)
class Guidance:
    scale: float
    negative_ids: tuple[int, ...] | None = None  # None: the prompt's last token

    def processor(self, model):
        """A fresh transformers CFG processor for one generation on `model` (a transformers engine model)."""
        hf = getattr(model, "model", None)
        if hf is None or not callable(getattr(hf, "forward", None)):
            raise UserError("--guidance-scale: classifier-free guidance needs the transformers engine")
        import torch
        from transformers import UnbatchedClassifierFreeGuidanceLogitsProcessor

        device = hf.get_input_embeddings().weight.device
        ids = torch.tensor([list(self.negative_ids)], dtype=torch.long, device=device) if self.negative_ids else None
        inner = UnbatchedClassifierFreeGuidanceLogitsProcessor(self.scale, hf, unconditional_ids=ids, use_cache=True)

        def guided(input_ids, scores):
            with torch.inference_mode():
                return inner(input_ids, scores)

        return guided


def make_guidance(scale: float | None, negative_ids: Sequence[int] | None) -> Guidance | None:
    """A `Guidance`, or None when there is nothing to guide (no scale, or scale 1 without effect)."""
    check_scale(scale)
    if scale is None or scale == 1.0:
        return None
    return Guidance(scale, tuple(negative_ids) if negative_ids else None)
