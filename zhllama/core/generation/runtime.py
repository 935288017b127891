"""Everything `chat` and `serve` load once: the model, an optional speculative draft, the template.

Both commands build a `ChatRuntime` from the same flags, so a greedy answer from the API is the
answer `zhllama chat --prompt` prints for the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from zhllama.core import console
from zhllama.core.engine import GenerationParams, LoadedModel, open_model
from zhllama.core.errors import UserError
from zhllama.core.generation.guidance import Guidance, check_scale, make_guidance
from zhllama.core.generation.respond import Reply, with_template_stops
from zhllama.core.generation.speculative import SpeculativeDecoder, parse_draft_k
from zhllama.core.loading.options import ModelOptions
from zhllama.core.templates import Message, Template, check_template_name, encode, resolve_template


@dataclass
class ChatRuntime:
    model: LoadedModel
    template: Template
    name: str
    decoder: SpeculativeDecoder | None = None
    system: str | None = None
    draft: LoadedModel | None = None

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of a conversation ending in a user message, ready for the answer."""
        own_system = bool(messages) and messages[0].role == "system"  # a request's system message wins
        system = None if own_system else self.system
        segments = self.template.segments(list(messages), system=system, add_generation_prompt=True)
        return encode(self.model.tokenizer, segments)[0]

    def completion_ids(self, prompt: str) -> list[int]:
        """A raw completion prompt (no template): BOS + the text."""
        return self.model.tokenizer.encode(prompt, bos=True)

    def reply(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        guidance: Guidance | None = None,
        logprobs: int | None = None,
    ) -> Reply:
        """A `Reply` whose answer is cut where the context ends (never past what the model can hold)."""
        room = self.model.context_length - len(prompt_ids)
        if room < 1:
            raise UserError(f"the prompt is {len(prompt_ids)} tokens; the context holds {self.model.context_length}")
        if params.max_new_tokens > room:
            params = replace(params, max_new_tokens=room)
        if guidance is not None and self.decoder is not None:
            raise UserError("--guidance-scale: cannot be combined with --draft-model (speculative decoding)")
        if logprobs is not None and type(self.model).session is LoadedModel.session:
            raise UserError("logprobs: this engine does not report log-probabilities")
        params = with_template_stops(params, self.template, self.model.tokenizer)
        return Reply(self.model, prompt_ids, params, self.decoder, guidance=guidance, logprobs=logprobs)

    def guidance(self, scale: float | None, negative_prompt: str | None = None) -> Guidance | None:
        """Classifier-free guidance settings; the negative prompt is rendered with the template,
        as Chinese-LLaMA-Alpaca-2 does (a user message, same system prompt)."""
        check_scale(scale)
        if negative_prompt is not None and scale is None:
            raise UserError("--negative-prompt: give --guidance-scale too")
        if scale is None or scale == 1.0:
            return None
        if not callable(getattr(getattr(self.model, "model", None), "forward", None)):
            raise UserError("--guidance-scale: classifier-free guidance needs the transformers engine")
        negative = self.prompt_ids([Message("user", negative_prompt)]) if negative_prompt else None
        return make_guidance(scale, negative)

    def history_budget(self, max_new_tokens: int) -> int:
        """Prompt tokens a conversation may use so the answer still fits the context."""
        context = self.model.context_length
        return context - max_new_tokens if max_new_tokens < context // 2 else context // 2

    def close(self) -> None:
        self.model.close()
        if self.draft is not None:
            self.draft.close()


def load_runtime(
    options: ModelOptions,
    template: str = "auto",
    system: str | None = None,
    draft_model: Path | None = None,
    draft_k: str = "auto",
) -> ChatRuntime:
    """The model of `options` (plus a speculative draft) with its template resolved."""
    check_template_name(template)  # fail on bad names and values before the slow model load
    if draft_model is not None:
        parse_draft_k(draft_k)
    console.log(f"loading {options.model} ...")
    loaded = open_model(options)
    try:
        chosen = resolve_template(template, loaded.tokenizer)
    except BaseException:
        loaded.close()
        raise
    runtime = ChatRuntime(loaded, chosen, Path(str(options.model).rstrip("/")).name, system=system)
    if draft_model is not None:
        console.log(f"loading draft model {draft_model} ...")
        draft_options = ModelOptions(
            model=str(draft_model),
            engine=options.engine,
            device=options.device,
            dtype=options.dtype,
            context_length=loaded.context_length,
        )
        runtime.draft = open_model(draft_options)
        runtime.decoder = SpeculativeDecoder(loaded, runtime.draft, draft_k)
    return runtime


def load_for_answers(options: ModelOptions, answer) -> ChatRuntime:
    """`load_runtime` from an `AnswerOptions` (chat, serve, webui, predict)."""
    return load_runtime(options, answer.template, answer.system_prompt, answer.draft_model, answer.draft_k)
