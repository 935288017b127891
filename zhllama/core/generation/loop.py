"""The token-by-token decoding loop every engine shares.

An engine supplies a *session*: an object holding one sequence's KV cache with
`feed(ids, all_logits=False)` (append ids, return the logits after the last one, or after each
one) and `rollback(length)` (forget everything after `length` tokens; speculative decoding needs
it). The loop samples, asks the shared `Stopper` (EOS / stop ids / stop strings / the limit), and
yields ids as soon as they are chosen, so a consumer that stops iterating (Ctrl-C, a closed HTTP connection) stops
the generation there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.sampling import Sampler
from zhllama.core.generation.stopping import Stopper


class Session(Protocol):
    length: int

    def feed(self, ids: Sequence[int], all_logits: bool = False) -> Any: ...

    def rollback(self, length: int) -> None: ...


def decode(
    session: Session,
    tokenizer,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    extra_stops: Iterable[int] = (),
    stopper: Stopper | None = None,
    sampler: Sampler | None = None,
) -> Iterator[int]:
    """Yield generated token ids (EOS and stop ids are not yielded; a stop string's tokens are).

    `stopper` (default: a new one) decides when to stop; a caller that passes its own reads the
    text and finish reason from it. `sampler` defaults to `Sampler(params)`.
    """
    if not prompt_ids:
        raise ValueError("empty prompt: at least one token (BOS) is needed")
    sampler = sampler or Sampler(params)
    stopper = stopper or Stopper(tokenizer, params, extra_stops)
    ids = list(prompt_ids)
    logits = session.feed(ids)
    while True:
        token = sampler(ids, logits)
        if stopper.is_end(token):
            return
        stopper.record(token, logits)
        stopper.push(token)
        yield token
        ids.append(token)
        if stopper.done:
            return
        logits = session.feed([token])
