"""`AnswerOptions`: the template and sampling flags of chat, serve, webui and predict, declared once.

`zhllama.cli.schema.with_options` turns the fields into Typer flags (help text in the metadata), so
the four commands spell and document every flag the same way; `validated()` checks the values
before the model is loaded, and `params()` gives the `GenerationParams` the decoders use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from zhllama.core.engine import GenerationParams
from zhllama.core.errors import UserError
from zhllama.core.generation.guidance import check_scale
from zhllama.core.schema import option


@dataclass
class AnswerOptions:
    template: str = option(
        "auto",
        "Prompt template: auto (the model's own chat template, else llama2-zh), hf (the model's own, required), "
        "or a name from `zhllama plugins` (llama2-zh, alpaca, chatml, none for base models).",
    )
    system_prompt: str | None = option(None, "System prompt (default: the template's).")
    max_new_tokens: int = option(512, "Most tokens per answer.")
    temperature: float = option(0.2, "Sampling temperature (0 = greedy).")
    top_p: float = option(0.9, "Nucleus sampling mass (0, 1].")
    top_k: int = option(40, "Sample among the k best tokens (0 = all).")
    repetition_penalty: float = option(1.1, "Penalty on repeated tokens (1 = none).")
    seed: int | None = option(None, "Sampling seed (default 0: deterministic).")
    greedy: bool = option(False, "Always take the most likely token.")
    guidance_scale: float | None = option(
        None, "Classifier-free guidance scale G (transformers engine; 1 = off), as CLA2's --guidance_scale."
    )
    negative_prompt: str | None = option(
        None, "CFG negative prompt (rendered with the template); needs --guidance-scale."
    )
    draft_model: Path | None = option(None, "Small model sharing the tokenizer, for speculative decoding.")
    draft_k: str = option("auto", "Tokens the draft proposes per step, or `auto`.")

    def validated(self) -> AnswerOptions:
        """Raises `UserError` naming the first bad flag."""
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens: must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature <= 100:
            raise UserError(f"--temperature: must be between 0 and 100, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"--top-k: must be at least 0, got {self.top_k}")
        if not 0 < self.repetition_penalty <= 10:
            raise UserError(f"--repetition-penalty: must be in (0, 10], got {self.repetition_penalty}")
        if self.seed is not None and not -(1 << 63) <= self.seed < 1 << 63:
            raise UserError(f"--seed: must fit in 64 bits, got {self.seed}")
        check_scale(self.guidance_scale)
        if self.negative_prompt is not None and self.guidance_scale is None:
            raise UserError("--negative-prompt: give --guidance-scale too")
        if self.guidance_scale not in (None, 1.0) and self.draft_model is not None:
            raise UserError("--guidance-scale: cannot be combined with --draft-model (speculative decoding)")
        return dataclasses.replace(self)

    def params(self, max_new_tokens: int | None = None) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            greedy=self.greedy or self.temperature == 0,
        )
