"""Inference engines: one interface for `chat`, `serve` and `eval`, several backends as plugins.

An engine plugin (entry-point group `zhllama.engines`, base `plugin_api.EnginePlugin`) is a class
with the usual plugin attributes (`name`, `description`, `requires`, `install_hint`), a classmethod
`accepts(model_path) -> bool` and a declared `priority` used for automatic choice (every registered
engine is asked, highest priority first), `resolves_sources` (whether hub ids and Meta folders are
turned into HF folders for it first), and a classmethod `load(model_path, options: ModelOptions) -> LoadedModel`.

`open_model(ModelOptions(...))` is the one way every command turns a model source into a ready
model: options are validated first, the source is resolved to a local path, the engine is chosen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zhllama.core import registry
from zhllama.core.errors import UserError
from zhllama.core.loading.options import ModelOptions


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


class TokenizerLike(Protocol):
    """What both engines' tokenizers provide (`ZhTokenizer` for HF folders, llama.cpp's for GGUF)."""

    bos_id: int | None
    eos_id: int | None
    pad_id: int

    def __len__(self) -> int: ...

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...

    def piece_to_id(self, piece: str) -> int | None: ...


class Session(Protocol):
    """One sequence's KV cache: feed tokens, get the next-token logits, roll back (speculation)."""

    length: int

    def feed(self, ids: Sequence[int], all_logits: bool = False) -> Any: ...

    def rollback(self, length: int) -> None: ...


class LoadedModel(ABC):
    """A model ready for inference. `tokenizer` is a `ZhTokenizer`."""

    tokenizer: TokenizerLike
    context_length: int

    @abstractmethod
    def next_token_logits(self, batch: Sequence[Sequence[int]]) -> Any:
        """Logits (float32 tensor [B, vocab]) of the token after each sequence; no padding effects."""

    def next_token_logits_with_prefix(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]) -> Any:
        """`next_token_logits` of `prefix + suffix` for each suffix; engines that can reuse the
        prefix's KV cache across the batch override this (few-shot evaluation)."""
        return self.next_token_logits([list(prefix) + list(s) for s in suffixes])

    @abstractmethod
    def generate(self, prompt_ids: Sequence[int], params: GenerationParams, stopper=None) -> Iterator[int]:
        """Yield new token ids one by one (streaming); stops at EOS, stop ids/strings or the limit.

        `stopper` (`core.generation.stopping.Stopper`, default: a new one) is the caller's stop rule:
        every generated id goes through it once, so the caller reads the final text and finish reason
        from it (`Reply` does).
        """

    def session(self) -> Session:
        """A fresh KV-cache session (chat history reuse, speculative decoding)."""
        raise NotImplementedError(f"{type(self).__name__} has no incremental session")

    def close(self) -> None:
        """Free native resources (llama.cpp models must be closed before interpreter exit)."""
        return None


def engines_by_priority() -> list[tuple[str, type]]:
    """Every registered engine that loads, as (name, class), highest declared `priority` first (ties
    by name). Requirements are not checked: a chosen engine whose extra is missing says how to install
    it when it is loaded. Engines whose module fails to import are skipped (`zhllama plugins` shows why)."""
    found = []
    for name in registry.names("engines"):
        try:
            found.append((name, registry.load("engines", name, check_requirements=False)))
        except UserError:
            continue
    return sorted(found, key=lambda item: (-item[1].priority, item[0]))  # registry: EnginePlugin subclasses


def _accepting(path: Path, engines: list[tuple[str, type]]) -> str | None:
    for name, cls in engines:
        try:
            if cls.accepts(path):
                return name
        except Exception:  # a third-party engine's broken check must not stop the others
            continue
    return None


def choose_engine(model: str | Path, engine: str | None = None, engines: list[tuple[str, type]] | None = None) -> str:
    """The engine for a model: the one asked for, else the first of `engines` (default: every
    registered engine, by declared `priority`) whose `accepts` takes the path."""
    if engine is not None:
        return engine
    chosen = _accepting(Path(model), engines_by_priority() if engines is None else engines)
    if chosen is None:
        raise UserError(f"{model}: no engine accepts this model (a HF folder or a .gguf file is expected)")
    return chosen


def _resolve(options: ModelOptions) -> tuple[Path, str]:
    """(local path, engine name). Engines that declare `resolves_sources` get hub ids and Meta /
    TencentPretrain folders as HF folders, and every model validated (`resolve_model`); others get
    the path as given."""
    from zhllama.core.checkpoint.sources import resolve_model

    path = Path(options.model)
    if options.engine is not None:
        if registry.load("engines", options.engine, check_requirements=False).resolves_sources:
            return resolve_model(options.model), options.engine
        if not path.exists():
            raise UserError(f"{path}: model not found")
        return path, options.engine
    engines = engines_by_priority()
    raw = _accepting(path, engines)  # a format of its own: the engine that declares it, path as given
    if raw is not None and not dict(engines)[raw].resolves_sources:
        return path, raw
    path = resolve_model(options.model)  # hub ids and Meta/TencentPretrain folders become HF folders
    return path, choose_engine(path, engines=[(n, c) for n, c in engines if c.resolves_sources])


def open_model(options: ModelOptions | str | Path) -> LoadedModel:
    """Load a model: `open_model(ModelOptions(model=..., ...))`, or a bare source with default options."""
    if not isinstance(options, ModelOptions):
        options = ModelOptions(model=str(options))
    options = options.validated()
    path, name = _resolve(options)
    return registry.load("engines", name).load(path, options)
