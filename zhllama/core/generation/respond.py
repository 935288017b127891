"""One answer from a loaded model as text chunks: what `chat` prints and `serve` streams.

`Reply` runs the token generator (plain or speculative), turns ids into final text with
`TextStream` and records the counts an API response needs. Iterating it yields text chunks as
soon as they are final; leaving the loop early (Ctrl-C) or `cancel()` from another thread (a closed
connection) stops generation after the current token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from zhllama.core.engine import GenerationParams, LoadedModel
from zhllama.core.generation.stopping import TextStream, stop_strings


def with_template_stops(params: GenerationParams, template) -> GenerationParams:
    """`params` plus the template's end markers as stop strings."""
    extra = tuple(getattr(template, "stop_strings", ()) or ())
    return replace(params, stop_strings=tuple(dict.fromkeys((*params.stop_strings, *extra))))


class Reply:
    def __init__(self, model: LoadedModel, prompt_ids: Sequence[int], params: GenerationParams, decoder=None):
        self.model = model
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.decoder = decoder  # a SpeculativeDecoder, or None for plain decoding
        self.token_ids: list[int] = []
        self.stream = TextStream(model.tokenizer, stop_strings(params))
        self.finish_reason = "stop"
        self.cancelled = False

    def cancel(self) -> None:
        """Stop after the current token (called from another thread, e.g. on a client disconnect)."""
        self.cancelled = True

    def __iter__(self) -> Iterator[str]:
        source = (self.decoder or self.model).generate(self.prompt_ids, self.params)
        try:
            for token in source:
                if self.cancelled:
                    return
                self.token_ids.append(token)
                chunk = self.stream.push(token)
                if chunk:
                    yield chunk
        finally:
            source.close()
        if not self.stream.stopped and len(self.token_ids) >= self.params.max_new_tokens:
            self.finish_reason = "length"
        rest = self.stream.finish()
        if rest:
            yield rest

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
