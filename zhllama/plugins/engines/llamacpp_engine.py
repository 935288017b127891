"""The llama.cpp engine: `.gguf` files through llama-cpp-python.

Sampling and stopping are zhllama's own (`core.generation`), so a GGUF model decodes with exactly
the same rules as the transformers engine; llama.cpp only evaluates tokens and hands back logits.
Tokenization is llama.cpp's (the GGUF carries its vocabulary). `close()` frees the native model
and must run before the interpreter exits when torch is also loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from zhllama.core.engine import GenerationParams, LoadedModel, LoadOptions
from zhllama.core.errors import UserError
from zhllama.core.generation.loop import decode


class LlamaCppEngine:
    name = "llamacpp"
    description = "GGUF files through llama.cpp (llama-cpp-python)"
    requires = ("llama_cpp",)
    install_hint = "pip install 'zhllama[llamacpp]'"

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return Path(path).is_file() and Path(path).suffix.lower() == ".gguf"

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> LlamaCppModel:
        return LlamaCppModel.load(Path(path), options)


class GGUFTokenizer:
    """The `ZhTokenizer` subset the decoding loop and chat need, backed by llama.cpp's vocabulary."""

    def __init__(self, llm):
        self.llm = llm
        self.bos_id = llm.token_bos() if llm.token_bos() >= 0 else None
        self.eos_id = llm.token_eos() if llm.token_eos() >= 0 else None
        self.pad_id = self.eos_id if self.eos_id is not None else 0

    def __len__(self) -> int:
        return self.llm.n_vocab()

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []
        if bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        if eos and self.eos_id is not None:
            ids = [*ids, self.eos_id]
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        specials = {self.bos_id, self.eos_id} if skip_special else set()
        kept = [i for i in ids if i not in specials]
        return self.llm.detokenize(kept).decode("utf-8", errors="replace").removeprefix(" ") if kept else ""


class LlamaCppSession:
    """One sequence in the llama.cpp context (the context holds a single sequence at a time)."""

    def __init__(self, owner: LlamaCppModel):
        self.owner = owner
        self.owner.llm.reset()
        self.length = 0

    def feed(self, ids: Sequence[int], all_logits: bool = False):
        """Evaluate `ids` after the kept prefix; logits of the last one (or of each, one pass per id)."""
        import torch

        llm = self.owner.llm
        if self.length + len(ids) > llm.n_ctx():
            raise UserError(f"{self.owner.path}: sequence longer than the context ({llm.n_ctx()} tokens)")
        if all_logits:
            return torch.stack([self.feed([token]) for token in ids])
        llm.n_tokens = self.length  # llama.cpp drops its cache past n_tokens before evaluating
        llm.eval(list(ids))
        self.length += len(ids)
        return self.owner.last_logits()

    def rollback(self, length: int) -> None:
        self.length = length


class LlamaCppModel(LoadedModel):
    def __init__(self, llm, path: Path):
        self.llm = llm
        self.path = path
        self.tokenizer = GGUFTokenizer(llm)
        self.context_length = llm.n_ctx()

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> LlamaCppModel:
        from llama_cpp import Llama

        if not LlamaCppEngine.accepts(path):
            raise UserError(f"{path}: not a .gguf file")
        if options.lora:
            raise UserError("--lora: merge adapters before converting to GGUF (zhllama merge, then zhllama quantize)")
        if options.load:
            raise UserError("--load: a GGUF file is already quantized; choose the quantization when writing it")
        if options.rope_scaling:
            raise UserError("--rope-scaling: not supported by the llama.cpp engine; use the transformers engine")
        try:
            llm = Llama(
                model_path=str(path),
                n_ctx=options.context_length or 0,  # 0: the trained context, as the transformers engine
                verbose=False,
            )
        except ValueError as exc:
            raise UserError(f"{path}: llama.cpp cannot load this file: {exc}") from exc
        return cls(llm, path)

    def last_logits(self):
        """Logits of the last evaluated token, read from llama.cpp's output buffer.

        The context is created without `logits_all`: that would keep an n_ctx x vocab float array
        (about 0.9 GB for a 55k vocabulary at 4k context) that only the last row is needed from.
        """
        import llama_cpp
        import numpy as np
        import torch

        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),))
        return torch.from_numpy(row.copy()).float()

    def session(self) -> LlamaCppSession:
        return LlamaCppSession(self)

    def next_token_logits(self, batch: Sequence[Sequence[int]]):
        import torch

        return torch.stack([self.session().feed(seq) for seq in batch])

    def generate(self, prompt_ids: Sequence[int], params: GenerationParams) -> Iterator[int]:
        return decode(self.session(), self.tokenizer, prompt_ids, params)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
