"""The llama.cpp engine: `.gguf` files through llama-cpp-python, a full citizen of every command.

- Generation samples with llama.cpp's own sampler chain, so decoding runs at llama.cpp's speed with
  no torch in the loop (torch's and llama.cpp's thread pools would otherwise compete for the cores).
  The chain is built in transformers' order (repetition penalty, temperature, top-k, top-p, seeded
  draw) and the penalty sees the prompt too, as transformers' does, so a greedy answer equals the
  transformers engine's on the HF folder the GGUF came from.
- Scoring (`next_token_logits`, sessions for speculative decoding) reads logits from llama.cpp's
  output buffer.
- The context length is what the Python side really holds: llama.cpp rounds `n_ctx` up (to 256),
  while llama-cpp-python's token buffer keeps the size asked for.
- `--gpu-layers auto` offloads every layer when llama.cpp was built with GPU support, else none.
- The tokenizer is llama.cpp's (the GGUF carries its vocabulary) behind the same interface as
  `ZhTokenizer`: encode/decode, special ids, `piece_to_id`, the GGUF's `chat_template`.

`close()` frees the native model and must run before the interpreter exits when torch is also loaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

from zhllama.core.engine import GenerationParams, LoadedModel
from zhllama.core.errors import UserError
from zhllama.core.generation.sampling import is_greedy
from zhllama.core.generation.stopping import Stopper
from zhllama.core.loading.llamacpp import new_llama
from zhllama.core.loading.options import ModelOptions, parse_gpu_layers
from zhllama.core.plugin_api import EnginePlugin


class LlamaCppEngine(EnginePlugin):
    name = "llamacpp"
    description = "GGUF files through llama.cpp (llama-cpp-python)"
    requires = ("llama_cpp",)
    install_hint = "pip install 'zhllama[llamacpp]'"

    priority = 20  # automatic choice: `.gguf` files
    resolves_sources = True  # hub ids, Meta/TencentPretrain folders -> HF folders first

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return Path(path).is_file() and Path(path).suffix.lower() == ".gguf"

    @classmethod
    def load(cls, path: Path, options: ModelOptions) -> LlamaCppModel:
        return LlamaCppModel.load(Path(path), options)


class GGUFTokenizer:
    """llama.cpp's vocabulary behind the tokenizer interface both engines share."""

    def __init__(self, llm):
        self.llm = llm
        self.bos_id = llm.token_bos() if llm.token_bos() >= 0 else None
        self.eos_id = llm.token_eos() if llm.token_eos() >= 0 else None
        self.pad_id = self.eos_id if self.eos_id is not None else 0
        self.chat_template: str | None = llm.metadata.get("tokenizer.chat_template")
        self._pieces: dict[str, int] | None = None

    def __len__(self) -> int:
        return self.llm.n_vocab()

    def encode(self, text: str, bos: bool = False, eos: bool = False, special: bool = False) -> list[int]:
        """Token ids of `text`; `special=True` parses special-token markers (e.g. `<|im_start|>`) as tokens."""
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special) if text else []
        if bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        if eos and self.eos_id is not None:
            ids = [*ids, self.eos_id]
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        specials = {self.bos_id, self.eos_id} if skip_special else set()
        raw = b"".join(self.token_bytes(i) for i in ids if i not in specials)
        return raw.decode("utf-8", errors="replace").removeprefix(" ")

    def token_bytes(self, idx: int) -> bytes:
        """The bytes of one token. llama-cpp-python's `detokenize` reads pieces into a 32-byte buffer
        and silently drops longer ones (runs of spaces, long merged words); llama.cpp returns the
        needed size as a negative count, so ask again with that size."""
        import ctypes

        import llama_cpp

        vocab = self.llm._model.vocab
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(idx), buf, size, 0, False)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def id_to_piece(self, idx: int) -> str:
        return self.llm._model.token_get_text(idx)

    def piece_to_id(self, piece: str) -> int | None:
        """The id of a vocabulary piece (e.g. '▁A'), as `ZhTokenizer.piece_to_id`; None if absent."""
        if self._pieces is None:
            pieces: dict[str, int] = {}
            for idx in range(len(self)):
                pieces.setdefault(self.id_to_piece(idx), idx)
            self._pieces = pieces
        return self._pieces.get(piece)

    @cached_property
    def special_tokens(self) -> dict[str, int]:
        """Text -> id of the control and user-defined tokens (what `encode(..., special=True)` parses)."""
        import llama_cpp

        kinds = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        model = self.llm._model
        return {model.token_get_text(i): i for i in range(len(self)) if model.token_get_attr(i) & kinds}

    @cached_property
    def special_tokens_map(self) -> dict[str, str]:
        """The special-token variables a chat template sees (`bos_token`, `eos_token`)."""
        names = {"bos_token": self.bos_id, "eos_token": self.eos_id}
        return {name: self.id_to_piece(idx) for name, idx in names.items() if idx is not None}


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
        self.owner.check_fits(self.length + len(ids))
        if all_logits:
            return torch.stack([self.feed([token]) for token in ids])
        llm.n_tokens = self.length  # llama.cpp drops its cache past n_tokens before evaluating
        llm.eval(list(ids))
        self.length += len(ids)
        return self.owner.last_logits()

    def rollback(self, length: int) -> None:
        self.length = length


class LlamaCppModel(LoadedModel):
    def __init__(self, llm, path: Path, context_length: int):
        self.llm = llm
        self.path = path
        self.tokenizer = GGUFTokenizer(llm)
        self.context_length = context_length

    @classmethod
    def load(cls, path: Path, options: ModelOptions) -> LlamaCppModel:
        import llama_cpp

        if not LlamaCppEngine.accepts(path):
            raise UserError(f"{path}: not a .gguf file")
        if options.lora:
            raise UserError("--lora: merge adapters before converting to GGUF (zhllama merge, then zhllama quantize)")
        if options.load:
            raise UserError("--load: a GGUF file is already quantized; choose the quantization when writing it")
        if options.rope_scaling:
            raise UserError("--rope-scaling: not supported by the llama.cpp engine; use the transformers engine")
        if options.device == "cpu" and options.gpu_layers not in ("auto", "0"):
            raise UserError(f"--gpu-layers {options.gpu_layers}: contradicts --device cpu")
        layers = parse_gpu_layers(options.gpu_layers)
        if options.device == "cpu" or (layers is None and not llama_cpp.llama_supports_gpu_offload()):
            layers = 0
        elif layers is None:
            layers = -1
        kwargs = {
            "n_ctx": options.context_length or 0,  # 0: the trained context, as the transformers engine
            "n_gpu_layers": layers,
            "verbose": False,
        }
        if options.threads:
            kwargs.update(n_threads=options.threads, n_threads_batch=options.threads)
        try:
            llm = new_llama(str(path), **kwargs)
        except ValueError as exc:
            raise UserError(f"{path}: llama.cpp cannot load this file: {exc}") from exc
        # llama.cpp may round n_ctx up; llama-cpp-python's buffers hold only what was asked for
        context = min(options.context_length or llm.n_ctx(), llm.n_ctx())
        return cls(llm, path, context)

    def check_fits(self, length: int) -> None:
        if length > self.context_length:
            raise UserError(f"{self.path}: sequence longer than the context ({self.context_length} tokens)")

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

    def sampler(self, params: GenerationParams, prompt_ids: Sequence[int]):
        """llama.cpp's sampler chain for `params`, in transformers' order, primed with the prompt."""
        from llama_cpp._internals import LlamaSampler

        chain = LlamaSampler()
        if params.repetition_penalty and params.repetition_penalty != 1.0:
            chain.add_penalties(len(self.tokenizer), self.context_length, params.repetition_penalty, 0.0, 0.0)
        if is_greedy(params):
            chain.add_greedy()
        else:
            if params.temperature != 1.0:
                chain.add_temp(params.temperature)
            if params.top_k and params.top_k > 0:
                chain.add_top_k(params.top_k)
            if params.top_p is not None and params.top_p < 1.0:
                chain.add_top_p(params.top_p, 1)
            chain.add_dist(params.seed if params.seed is not None else 0)  # reproducible by default
        for token in prompt_ids:  # the penalty window covers the prompt, as transformers' does
            chain.accept(token)
        return chain

    def generate(self, prompt_ids: Sequence[int], params: GenerationParams, stopper=None) -> Iterator[int]:
        """Yield new ids sampled by llama.cpp; stops at EOS, stop ids/strings or the limit."""
        if not prompt_ids:
            raise ValueError("empty prompt: at least one token (BOS) is needed")
        self.check_fits(len(prompt_ids))
        chain = self.sampler(params, prompt_ids)
        stopper = stopper or Stopper(self.tokenizer, params)
        llm = self.llm
        llm.reset()
        llm.eval(list(prompt_ids))
        length = len(prompt_ids)
        try:
            while True:
                token = chain.sample(llm._ctx, -1)  # samples and accepts into the penalty window
                if stopper.is_end(token):
                    return
                stopper.push(token)
                yield token
                if stopper.done or length + 1 >= self.context_length:  # the next token would not fit
                    return
                llm.eval([token])
                length += 1
        finally:
            chain.close()

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
