"""Inference engines: one interface for `chat`, `serve` and `eval`, several backends as plugins.

An engine plugin (entry-point group `zhllama.engines`) is a class with the usual plugin
attributes (`name`, `description`, `requires`, `install_hint`), a classmethod
`accepts(model_path) -> bool` used for automatic choice, and a classmethod
`load(model_path, options: LoadOptions) -> LoadedModel`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhllama.core import registry
from zhllama.core.errors import UserError


@dataclass
class GenerationParams:
    """Sampling settings shared by chat, serve and eval (`--mode generate`)."""

    max_new_tokens: int = 512
    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.1
    seed: int | None = None
    greedy: bool = False
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()


@dataclass
class LoadOptions:
    """How to load a model; engines ignore what does not apply to them and say so when it matters."""

    lora: Sequence[str] = ()
    load: str | None = None  # "4bit" | "8bit"
    dtype: str | None = None
    context_length: int | None = None
    rope_scaling: str | None = None
    rope_factor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class LoadedModel(ABC):
    """A model ready for inference. `tokenizer` is a `ZhTokenizer`."""

    tokenizer: Any
    context_length: int

    @abstractmethod
    def next_token_logits(self, batch: Sequence[Sequence[int]]) -> Any:
        """Logits (float32 tensor [B, vocab]) of the token after each sequence; no padding effects."""

    @abstractmethod
    def generate(self, prompt_ids: Sequence[int], params: GenerationParams) -> Iterator[int]:
        """Yield new token ids one by one (streaming); stops at EOS, stop ids/strings or the limit."""

    def close(self) -> None:
        """Free native resources (llama.cpp models must be closed before interpreter exit)."""
        return None


def choose_engine(model: str | Path, engine: str | None = None) -> str:
    """The engine for a model: the one asked for, else the first built-in that accepts the path."""
    if engine is not None:
        return engine
    for name in ("llamacpp", "transformers"):
        if name in registry.names("engines"):
            cls = registry.load("engines", name, check_requirements=False)
            if cls.accepts(Path(model)):
                return name
    raise UserError(f"{model}: no engine accepts this model (a HF folder or a .gguf file is expected)")


def open_model(model: str | Path, engine: str | None = None, options: LoadOptions | None = None) -> LoadedModel:
    """Load `model` with the chosen engine plugin."""
    model = Path(model)
    if not model.exists():
        raise UserError(f"{model}: model not found")
    cls = registry.load("engines", choose_engine(model, engine))
    return cls.load(model, options or LoadOptions())
