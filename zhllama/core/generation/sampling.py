"""Next-token choice: repetition penalty, temperature, top-k, top-p, then argmax or a seeded draw.

The logits processors are transformers' own, so a seeded greedy run here picks exactly the token
`model.generate` would with the same settings.
"""

from __future__ import annotations

from collections.abc import Sequence

from zhllama.core.engine import GenerationParams


def is_greedy(params: GenerationParams) -> bool:
    """Greedy when asked for, or when the temperature is 0 (as OpenAI clients send it)."""
    return params.greedy or params.temperature <= 0


class _Temperature:
    """transformers' `TemperatureLogitsWarper`, except where a temperature near 0 makes the scaled
    scores overflow to +inf: then the best score is moved to 0 first (softmax does not change; the
    draw is the T -> 0 limit, the best token, instead of NaN probabilities)."""

    def __init__(self, warper, temperature: float):
        self.warper, self.temperature = warper, temperature

    def __call__(self, input_ids, scores):
        import torch

        out = self.warper(input_ids, scores)
        if bool(torch.isposinf(out).any()) and not bool(torch.isposinf(scores).any()):
            shifted = scores.double() - scores.max(dim=-1, keepdim=True).values.double()
            out = (shifted / self.temperature).to(scores.dtype)  # float64: the temperature may be below float32's range
        return out


class Sampler:
    """Turns the logits after `ids` into one token id; draws come from a private seeded generator."""

    def __init__(self, params: GenerationParams, pre: Sequence = ()):
        import torch
        from transformers import (
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.greedy = is_greedy(params)
        penalty = params.repetition_penalty
        self.penalty = float(penalty) if penalty and penalty != 1.0 else 1.0
        self.plain_greedy = self.greedy and not pre  # argmax after the penalty: `greedy_tokens` batches it
        procs = list(pre)  # e.g. classifier-free guidance, first as in transformers' generate
        if params.repetition_penalty and params.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if not self.greedy:
            if params.temperature != 1.0:
                procs.append(_Temperature(TemperatureLogitsWarper(params.temperature), params.temperature))
            if params.top_k and params.top_k > 0:
                procs.append(TopKLogitsWarper(params.top_k))
            if params.top_p is not None and params.top_p < 1.0:
                procs.append(TopPLogitsWarper(params.top_p))
        self.processors = procs  # called directly: LogitsProcessorList inspects signatures on every call
        # runs are reproducible by default: no seed means seed 0, not the global RNG
        self.generator = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)

    def process(self, ids: Sequence[int], logits):
        """The processed scores [V] (float32) for the token after `ids`."""
        import torch

        scores = logits.float().reshape(1, -1)
        if self.processors:
            input_ids = torch.tensor([list(ids)], dtype=torch.long, device=scores.device)
            for processor in self.processors:
                scores = processor(input_ids, scores)
        return scores[0]

    def choose(self, scores) -> int:
        import torch

        scores = scores.cpu()  # draws use the CPU generator: the same seeded choice on every device

        if self.greedy:
            return int(torch.argmax(scores))
        probs = torch.softmax(scores, dim=-1)
        if not bool(torch.isfinite(probs).all()):  # scores overflowed (a penalty near 0): the limit, the best
            return int(torch.argmax(torch.nan_to_num(scores, nan=float("-inf"))))
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def __call__(self, ids: Sequence[int], logits) -> int:
        return self.choose(self.process(ids, logits))


def greedy_tokens(sequences: Sequence[Sequence[int]], logits, penalties: Sequence[float]) -> list[int]:
    """`Sampler(...)(ids, logits)` of several plain greedy rows at once: the repetition penalty as
    transformers applies it (gather, scale, scatter; each row's ids padded with its own first id, a
    repeat changes nothing), then the first argmax of each row."""
    import torch

    scores = logits.float()
    if any(p != 1.0 for p in penalties):
        width = max(len(s) for s in sequences)
        ids = torch.tensor([list(s) + [s[0]] * (width - len(s)) for s in sequences], device=scores.device)
        factor = torch.tensor(penalties, dtype=scores.dtype, device=scores.device).unsqueeze(1)
        score = torch.gather(scores, 1, ids)
        score = torch.where(score < 0, score * factor, score / factor)
        scores = scores.scatter(1, ids, score)
    return torch.argmax(scores, dim=-1).tolist()
