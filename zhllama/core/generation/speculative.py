"""Speculative decoding: a small draft model proposes k tokens, the target checks them in one pass.

Greedy decoding is exact: every emitted token is the target's own choice (same repetition penalty,
same argmax) at that position, the draft only decides how many of them one target forward pass
yields. The output is therefore token-for-token the target's plain greedy output, just with fewer
target passes when the draft guesses well. (Exact up to floating point: the target scores k+1
positions in one pass, and at a near-tie of ~1e-6 a batched pass can rank two tokens differently
than a one-token pass would.) With sampling, proposals are accepted by the rejection rule of
Leviathan et al. (`verify`), so every token is distributed as the target alone would sample it.
`draft_k="auto"` adapts k as transformers' assisted generation does: +2 after a round where every
proposal was accepted, -1 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from zhllama.core.engine import GenerationParams
from zhllama.core.errors import UserError
from zhllama.core.generation.sampling import Sampler
from zhllama.core.generation.stopping import Stopper

AUTO_START_K = 4
MAX_K = 16


@dataclass
class SpeculativeStats:
    proposed: int = 0
    accepted: int = 0
    target_passes: int = 0
    emitted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_pass(self) -> float:
        return self.emitted / self.target_passes if self.target_passes else 0.0

    def as_dict(self) -> dict:
        return {
            "proposed": self.proposed,
            "accepted": self.accepted,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "target_passes": self.target_passes,
            "tokens_per_target_pass": round(self.tokens_per_pass, 4),
        }


def parse_draft_k(value: str | int) -> int | str:
    if str(value) == "auto":
        return "auto"
    try:
        k = int(value)
    except ValueError:
        raise UserError(f"--draft-k: expected a positive integer or 'auto', got '{value}'") from None
    if not 1 <= k <= MAX_K:
        raise UserError(f"--draft-k: must be between 1 and {MAX_K}, got {k}")
    return k


class SpeculativeDecoder:
    """Wraps a target and a draft `LoadedModel` (both with `session()`) sharing one tokenizer."""

    def __init__(self, target, draft, draft_k: int | str = "auto"):
        if len(target.tokenizer) != len(draft.tokenizer):
            raise UserError(
                f"--draft-model: its vocabulary ({len(draft.tokenizer)}) differs from the model's "
                f"({len(target.tokenizer)}); the draft must share the tokenizer"
            )
        self.target = target
        self.draft = draft
        self.draft_k = parse_draft_k(draft_k)
        self.stats = SpeculativeStats()

    def generate(
        self, prompt_ids: Sequence[int], params: GenerationParams, stopper: Stopper | None = None
    ) -> Iterator[int]:
        sampler = Sampler(params)
        stopper = stopper or Stopper(self.target.tokenizer, params, getattr(self.target, "extra_stops", ()))
        ids = list(prompt_ids)
        target, draft = self.target.session(), self.draft.session()
        if len(ids) > 1:
            target.feed(ids[:-1])
        k = AUTO_START_K if self.draft_k == "auto" else self.draft_k
        produced = 0
        while True:
            k_now = max(1, min(k, params.max_new_tokens - produced))
            base = len(ids)
            proposals, draft_probs = self._propose(draft, sampler, ids, k_now)
            rows = target.feed([ids[-1], *proposals], all_logits=True)
            self.stats.target_passes += 1
            self.stats.proposed += k_now
            accepted = 0
            for j in range(k_now + 1):
                scores = sampler.process(ids, rows[j])
                if j == k_now:
                    token, agreed = sampler.choose(scores), False
                else:
                    token, agreed = verify(sampler, scores, proposals[j], draft_probs[j])
                if stopper.is_end(token):
                    return
                stopper.record(token, rows[j])
                stopper.push(token)
                yield token
                ids.append(token)
                produced += 1
                self.stats.emitted += 1
                if stopper.done:
                    self.stats.accepted += accepted
                    return
                if not agreed:
                    break
                accepted += 1
            self.stats.accepted += accepted
            target.rollback(base + accepted)
            draft.rollback(min(draft.length, base + accepted))
            if self.draft_k == "auto":
                k = min(k + 2, MAX_K) if accepted == k_now else max(1, k - 1)

    @staticmethod
    def _propose(draft, sampler: Sampler, ids: list[int], k: int):
        """k draft tokens and the draft's distributions they were drawn from (None when greedy)."""
        logits = draft.feed(ids[draft.length :])
        proposals: list[int] = []
        probs = []
        for i in range(k):
            scores = sampler.process(ids + proposals, logits)
            if sampler.greedy:
                probs.append(None)
                proposals.append(sampler.choose(scores))
            else:
                q = _softmax(scores)
                probs.append(q)
                proposals.append(int(_draw(q, sampler.generator)))
            if i < k - 1:
                logits = draft.feed([proposals[-1]])
        return proposals, probs


def _softmax(scores):
    import torch

    return torch.softmax(scores, dim=-1)


def _draw(probs, generator) -> int:
    import torch

    return int(torch.multinomial(probs, 1, generator=generator))


def verify(sampler: Sampler, scores, proposal: int, draft_probs) -> tuple[int, bool]:
    """The target's token at one position given the draft's proposal: (token, proposal accepted).

    Greedy: the target's argmax; the proposal counts as accepted when it is that token.
    Sampling (Leviathan et al. 2023): accept with probability min(1, p(x)/q(x)), otherwise draw
    from the residual max(0, p - q) renormalised; the token is then distributed exactly as p.
    """
    import torch

    if draft_probs is None:
        token = sampler.choose(scores)
        return token, token == proposal
    p = _softmax(scores)
    ratio = p[proposal] / draft_probs[proposal]
    if torch.rand((), generator=sampler.generator) < ratio:
        return proposal, True
    residual = torch.clamp(p - draft_probs, min=0)
    total = residual.sum()
    return _draw(residual / total if total > 0 else p, sampler.generator), False
