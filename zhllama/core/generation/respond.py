"""One answer from a loaded model as text chunks: what `chat` prints, `serve` streams, `eval` scores.

`Reply` runs the token generator (plain loop, speculative, or an engine's own) with one shared
`Stopper`, so each generated id is detokenized once and the stop rule lives in one place.
Iterating it yields text chunks as soon as they are final; leaving the loop early (Ctrl-C) or
`cancel()` from another thread (a closed connection) stops generation after the current token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from zhllama.core.engine import GenerationParams, LoadedModel
from zhllama.core.generation.loop import decode
from zhllama.core.generation.sampling import Sampler
from zhllama.core.generation.stopping import Stopper


def with_template_stops(params: GenerationParams, template, tokenizer=None) -> GenerationParams:
    """`params` plus the template's end markers: its stop strings, and its end tokens' ids."""
    from zhllama.core.templates import stop_token_ids

    extra = tuple(getattr(template, "stop_strings", ()) or ())
    ids = stop_token_ids(template, tokenizer) if tokenizer is not None else ()
    return replace(
        params,
        stop_strings=tuple(dict.fromkeys((*params.stop_strings, *extra))),
        stop_token_ids=tuple(dict.fromkeys((*params.stop_token_ids, *ids))),
    )


class Reply:
    def __init__(
        self,
        model: LoadedModel,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        decoder=None,
        guidance=None,
        logprobs: int | None = None,
    ):
        self.model = model
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.decoder = decoder  # a SpeculativeDecoder, or None for plain decoding
        self.guidance = guidance  # a `guidance.Guidance` (classifier-free guidance), or None
        self.stopper = Stopper(model.tokenizer, params, getattr(model, "extra_stops", ()), logprobs)
        self.stream = self.stopper.stream
        self.token_ids: list[int] = []
        self.cancelled = False

    def cancel(self) -> None:
        """Stop after the current token (called from another thread, e.g. on a client disconnect)."""
        self.cancelled = True

    def _tokens(self) -> Iterator[int]:
        if self.decoder is not None:
            return self.decoder.generate(self.prompt_ids, self.params, self.stopper)
        if self.guidance is not None or self.stopper.logprobs is not None:  # needs the shared loop's logits
            sampler = Sampler(self.params, pre=(self.guidance.processor(self.model),) if self.guidance else ())
            session = self.model.session()
            return decode(session, self.model.tokenizer, self.prompt_ids, self.params, (), self.stopper, sampler)
        return self.model.generate(self.prompt_ids, self.params, stopper=self.stopper)

    def __iter__(self) -> Iterator[str]:
        source = self._tokens()
        shown = 0
        try:
            for token in source:
                if self.cancelled:
                    return
                self.token_ids.append(token)
                final = self.stream.final
                if len(final) > shown:
                    yield final[shown:]
                    shown = len(final)
        finally:
            source.close()
        self.stream.finish()
        final = self.stream.final
        if len(final) > shown:
            yield final[shown:]

    @property
    def finish_reason(self) -> str:
        return self.stopper.finish_reason or "stop"

    @property
    def text(self) -> str:
        return self.stream.text

    @property
    def usage(self) -> dict[str, int]:
        prompt, completion = len(self.prompt_ids), len(self.token_ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def run(self) -> str:
        """Generate the whole answer; returns its text."""
        for _ in self:
            pass
        return self.text
