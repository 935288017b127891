"""The token-by-token decoding loop every engine shares.

An engine supplies a *session*: an object holding one sequence's KV cache with
`feed(ids, all_logits=False)` (append ids, return the logits after the last one, or after each
one) and `rollback(length)` (forget everything after `length` tokens; speculative decoding needs
it). The loop samples, stops at EOS / stop ids / stop strings / the limit, and yields ids as soon
as they are chosen, so a consumer that stops iterating (Ctrl-C, a closed HTTP connection) stops
the generation there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.sampling import Sampler
from zhllama.core.generation.stopping import TextStream, stop_ids, stop_strings


class Session(Protocol):
    length: int

    def feed(self, ids: Sequence[int], all_logits: bool = False) -> Any: ...

    def rollback(self, length: int) -> None: ...


def decode(
    session: Session, tokenizer, prompt_ids: Sequence[int], params: GenerationParams, extra_stops: Iterable[int] = ()
) -> Iterator[int]:
    """Yield generated token ids (EOS and stop ids are not yielded; a stop string's tokens are)."""
    if not prompt_ids:
        raise ValueError("empty prompt: at least one token (BOS) is needed")
    sampler = Sampler(params)
    ends = stop_ids(tokenizer, params, extra_stops)
    text = TextStream(tokenizer, stop_strings(params))
    ids = list(prompt_ids)
    logits = session.feed(ids)
    for produced in range(1, params.max_new_tokens + 1):
        token = sampler(ids, logits)
        if token in ends:
            return
        yield token
        ids.append(token)
        text.push(token)
        if text.stopped or produced == params.max_new_tokens:
            return
        logits = session.feed([token])
