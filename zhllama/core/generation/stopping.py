"""When to stop and what text to show: EOS / end-marker ids, stop strings, incremental detokenizing.

`Stopper` is the one stop rule every decoding path uses (the plain loop, speculative decoding, the
`Reply` that chat/serve/eval consume): it sees each generated id once, decodes it once, and says
whether generation is over and why (`finish_reason`: "stop" or "length").

`TextStream` is fed token ids as they are generated and returns only text that is final: it holds
back an incomplete UTF-8 character and any tail that could still become a stop string, and cuts the
text at the first stop string, so nothing after `</s>` or a template end marker is ever shown.
"""

from __future__ import annotations

from collections.abc import Iterable

from zhllama.core.engine import GenerationParams

REPLACEMENT = "\ufffd"


def stop_ids(tokenizer, params: GenerationParams, extra: Iterable[int] = ()) -> set[int]:
    """Token ids that end generation: EOS, the caller's stop ids, and engine-specific ends."""
    ids = set(params.stop_token_ids) | set(extra)
    if tokenizer.eos_id is not None:
        ids.add(tokenizer.eos_id)
    return ids


def stop_strings(params: GenerationParams) -> tuple[str, ...]:
    """The caller's stop strings plus the literal end-of-sequence marker (a model may spell it out)."""
    return tuple(dict.fromkeys(s for s in (*params.stop_strings, "</s>") if s))


class TextStream:
    """Incremental decoding of generated ids into final text (see the module docstring)."""

    def __init__(self, tokenizer, stops: Iterable[str] = ()):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.ids: list[int] = []
        self.emitted = 0
        self.stopped = False
        self._text = ""

    def _cut(self, text: str) -> int | None:
        hits = [text.find(s) for s in self.stops if s in text]
        return min(hits) if hits else None

    def _safe_end(self, text: str) -> int:
        end = len(text.rstrip(REPLACEMENT))
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, end), 0, -1):
                if text[:end].endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return end - hold

    def push(self, token_id: int) -> str:
        """Add one generated id; return the newly final text ('' while it is held back)."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        self._text = self.tokenizer.decode(self.ids)
        cut = self._cut(self._text)
        if cut is not None:
            self.stopped = True
            end = max(cut, self.emitted)
        else:
            end = max(self._safe_end(self._text), self.emitted)
        delta = self._text[self.emitted : end]
        self.emitted = end
        return delta

    @property
    def final(self) -> str:
        """The text released so far (what `push` has returned, concatenated)."""
        return self._text[: self.emitted]

    def finish(self) -> str:
        """The held-back rest once generation is over (still cut at a stop string)."""
        cut = self._cut(self._text)
        end = len(self._text) if cut is None else cut
        delta = self._text[self.emitted : max(end, self.emitted)]
        self.emitted = max(end, self.emitted)
        return delta

    @property
    def text(self) -> str:
        """The whole final text so far (cut at the first stop string)."""
        cut = self._cut(self._text)
        return self._text if cut is None else self._text[:cut]


class Stopper:
    """One generation's stop state: end ids, stop strings (through `TextStream`), the token limit.

    A decoding loop calls `is_end(token)` before emitting a token (EOS and stop ids are never
    emitted) and `push(token)` after; `done` then says whether to stop. Consumers read the final
    text from `stream` (`stream.final`), so every token is detokenized exactly once.
    With `logprobs` set, `record(token, logits)` keeps each token's log-probability and the top
    `logprobs` alternatives (of the model's own distribution, before sampling settings).
    """

    def __init__(self, tokenizer, params: GenerationParams, extra: Iterable[int] = (), logprobs: int | None = None):
        self.ends = stop_ids(tokenizer, params, extra)
        self.stream = TextStream(tokenizer, stop_strings(params))
        self.limit = params.max_new_tokens
        self.count = 0
        self.finish_reason: str | None = None
        self.logprobs = logprobs
        self.token_logprobs: list[tuple[int, float, list[tuple[int, float]]]] = []

    def is_end(self, token: int) -> bool:
        if token in self.ends:
            self.finish_reason = "stop"
            return True
        return False

    def push(self, token: int) -> None:
        self.count += 1
        self.stream.push(token)
        if self.stream.stopped:
            self.finish_reason = "stop"
        elif self.count >= self.limit:
            self.finish_reason = "length"

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def record(self, token: int, logits) -> None:
        if self.logprobs is None:
            return
        import torch

        logp = torch.log_softmax(logits.float().reshape(-1), dim=-1)
        top = torch.topk(logp, min(self.logprobs, logp.numel())) if self.logprobs > 0 else None
        alternatives = [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)] if top else []
        self.token_logprobs.append((token, float(logp[token]), alternatives))
