"""Sliding-window perplexity that scores every token exactly once (`zhllama eval ppl`).

Windows of `context` tokens advance by `stride`; in each window only the tokens not scored by an
earlier window count, conditioned on up to `context` tokens before them. With stride == context
the windows are disjoint; with a smaller stride later tokens see more left context.

Backends: `transformers` (HF folders, bnb/GPTQ checkpoints, and .gguf files dequantized by
transformers with the source model's tokenizer) and `llamacpp` (.gguf at llama.cpp's own speed:
logits are requested for the scored rows only and log-softmax runs in float32 on those rows, as
llama.cpp's `llama-perplexity` does).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from zhllama.core.errors import MissingDependencyError, UserError

BACKENDS = ("auto", "transformers", "llamacpp")


@dataclass
class PplResult:
    model: str
    data: str
    perplexity: float
    nll: float
    tokens_scored: int
    context: int
    stride: int
    backend: str = ""
    seconds: float = 0.0  # scoring time (model loading excluded)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_scored / self.seconds if self.seconds else 0.0


def read_text(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not text:
        raise UserError(f"{path}: text file is empty")
    return text


def check_window(context: int | None, stride: int | None, batch_size: int = 1) -> None:
    """Validate the window options (None: decided once the model's context is known)."""
    if context is not None and context < 2:
        raise UserError(f"--context: {context} must be at least 2")
    if stride is not None and stride < 1:
        raise UserError(f"--stride: {stride} must be at least 1")
    if context is not None and stride is not None and stride > context:
        raise UserError(f"--stride: {stride} is larger than --context {context} (tokens would be skipped)")
    if batch_size < 1:
        raise UserError(f"--batch-size: {batch_size} must be at least 1")


def resolve_window(context: int | None, stride: int | None, limit: int | None) -> tuple[int, int]:
    """(context, stride) once the model's usable context `limit` is known; never clamps silently."""
    if context is None:
        context = limit or 4096
    elif limit and context > limit:
        raise UserError(
            f"--context: {context} is longer than the model's context ({limit} tokens); "
            "lower it or extend the model with --rope-scaling/--rope-factor"
        )
    stride = context if stride is None else stride
    check_window(context, stride)
    return context, stride


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_new) for each window; n_new tokens at the end of the window are scored."""
    check_window(context, stride)
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        new = end - max(prev_end, 1 if begin == 0 else prev_end)
        if new > 0:
            out.append((begin, end, new))
        prev_end = end
        if end == n_tokens:
            break
    return out


Advance = Callable[[int], None]


def hf_nll(
    model,
    ids: list[int],
    context: int,
    stride: int,
    batch_size: int = 1,
    device: str = "cpu",
    advance: Advance | None = None,
) -> tuple[float, int]:
    """Total negative log-likelihood and the number of tokens scored (transformers model)."""
    import torch

    total, count = 0.0, 0
    spans = windows(len(ids), context, stride)
    for i in range(0, len(spans), batch_size):
        group = spans[i : i + batch_size]
        width = max(end - begin for begin, end, _ in group)
        inputs = torch.zeros(len(group), width, dtype=torch.long)
        labels = torch.full((len(group), width), -100, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for row, (begin, end, new) in enumerate(group):
            chunk = torch.tensor(ids[begin:end])
            inputs[row, : len(chunk)] = chunk
            mask[row, : len(chunk)] = 1
            labels[row, len(chunk) - new : len(chunk)] = chunk[len(chunk) - new :]
        with torch.inference_mode():
            logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
        )
        scored = int((labels[:, 1:] != -100).sum())
        total += float(losses)
        count += scored
        if advance is not None:
            advance(scored)
    return total, count


def _llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def choose_backend(model: Path, backend: str, tokenizer: Path | None) -> str:
    """The backend that will score `model`; refuses flags that would not be used."""
    if backend not in BACKENDS:
        raise UserError(f"--backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    gguf = model.suffix == ".gguf"
    if backend == "llamacpp":
        if not gguf:
            raise UserError(f"--backend llamacpp: {model} is not a .gguf file")
        if tokenizer is not None:
            raise UserError("--tokenizer: llama.cpp uses the tokenizer inside the .gguf; use --backend transformers")
        return backend
    if backend == "auto":
        # --tokenizer with a .gguf means: dequantize through transformers and tokenize with it
        backend = "llamacpp" if gguf and tokenizer is None and _llama_cpp_available() else "transformers"
    if gguf and backend == "transformers" and tokenizer is None:
        raise MissingDependencyError(
            f"{model}: perplexity of a .gguf needs llama-cpp-python (pip install 'zhllama[llamacpp]'), "
            "or --tokenizer DIR (the source model's folder) to score it through transformers"
        )
    return backend


def perplexity(
    model,
    data: str | Path,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
    tokenizer: str | Path | None = None,
    backend: str = "auto",
    progress: bool = True,
) -> PplResult:
    """PPL of an HF folder (incl. bnb/GPTQ checkpoints) or a .gguf file.

    `model` is a path or a `ModelOptions` (device, dtype, --load, LoRA, rope and llama.cpp flags
    apply). `context` defaults to the model's context length. Every option is checked before the
    model is loaded.
    """
    from zhllama.core.loading.options import ModelOptions

    options = model if isinstance(model, ModelOptions) else ModelOptions(model=str(model))
    options = options.validated()
    path = Path(options.model)
    data = Path(data)
    tokenizer = Path(tokenizer) if tokenizer is not None else None
    check_window(context, stride, batch_size)
    text = read_text(data)
    backend = choose_backend(path, backend, tokenizer)
    if tokenizer is not None and not tokenizer.exists():
        raise UserError(f"{tokenizer}: --tokenizer not found")
    if backend == "llamacpp":
        if batch_size != 1:
            raise UserError("--batch-size: the llama.cpp backend scores one window at a time")
        total, count, context, stride, seconds = _gguf_nll(path, text, context, stride, options, progress)
    else:
        total, count, context, stride, seconds = _transformers_nll(
            options, path, tokenizer, text, context, stride, batch_size, progress
        )
    if count == 0:
        raise UserError(f"{data}: text has fewer than 2 tokens; nothing to score")
    return PplResult(str(path), str(data), math.exp(total / count), total, count, context, stride, backend, seconds)


def _progress(description: str, total: int, enabled: bool):
    from contextlib import nullcontext

    from rich.progress import ProgressColumn
    from rich.text import Text

    from zhllama.core import console

    class TokensPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} tok/s" if task.speed else "- tok/s")

    if not enabled:
        return nullcontext(None)
    return _Bar(console.make_progress(TokensPerSecond()), description, total)


class _Bar:
    """A progress bar over scored tokens (rate shown in tokens/s)."""

    def __init__(self, progress, description: str, total: int):
        self.progress, self.description, self.total = progress, description, total

    def __enter__(self) -> Advance:
        self.progress.__enter__()
        task = self.progress.add_task(self.description, total=self.total)
        return lambda n: self.progress.update(task, advance=n)

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.progress.live.transient = True
        self.progress.__exit__(*exc)


def _scored_tokens(n_tokens: int, context: int, stride: int) -> int:
    return sum(new for _, _, new in windows(n_tokens, context, stride))


def _transformers_nll(options, path: Path, tokenizer: Path | None, text: str, context, stride, batch_size, progress):
    from zhllama.core.tokenizer import ZhTokenizer

    if path.suffix == ".gguf":  # dequantized by transformers; ids from the source model's tokenizer
        from transformers import AutoModelForCausalLM

        from zhllama.core.loading.device import placement

        place = placement(options.device, options.dtype)
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: transformers cannot read this .gguf: {exc}") from exc
        hf_model.to(place.device)
        device, limit = place.device, getattr(hf_model.config, "max_position_embeddings", None)
        closer = None
    else:
        from zhllama.core.engine import open_model

        loaded = open_model(replace(options, engine=options.engine or "transformers"))
        if not hasattr(loaded, "model"):
            loaded.close()
            raise UserError(f"--engine {options.engine}: perplexity of an HF folder runs through transformers")
        hf_model, device, limit, closer = loaded.model, getattr(loaded, "device", "cpu"), loaded.context_length, loaded
    try:
        context, stride = resolve_window(context, stride, limit)
        tok = ZhTokenizer(tokenizer) if tokenizer is not None else (closer.tokenizer if closer else ZhTokenizer(path))
        ids = tok.encode(text, bos=True)
        with _progress("perplexity", _scored_tokens(len(ids), context, stride), progress) as advance:
            start = time.perf_counter()
            total, count = hf_nll(hf_model, ids, context, stride, batch_size, device, advance)
            return total, count, context, stride, time.perf_counter() - start
    finally:
        if closer is not None:
            closer.close()


def _gguf_nll(model: Path, text: str, context: int | None, stride: int | None, options, progress: bool):
    """The same windows through llama.cpp; logits only for the scored rows, log-softmax in float32."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError(
            "perplexity of a .gguf file needs llama-cpp-python; install it with: pip install 'zhllama[llamacpp]'"
        ) from exc
    from zhllama.core.loading.llamacpp import new_llama
    from zhllama.core.loading.options import parse_gpu_layers

    if options.lora or options.load or options.rope_scaling:
        raise UserError("--lora/--load/--rope-scaling: not used by llama.cpp; merge or convert before writing the GGUF")
    layers = parse_gpu_layers(options.gpu_layers)
    kwargs = {"n_threads": options.threads} if options.threads else {}
    trained = _gguf_context(model)
    context, stride = resolve_window(context, stride, trained)
    try:
        llm = new_llama(
            str(model),
            n_ctx=context,
            n_batch=context,
            n_ubatch=min(context, 512),
            n_gpu_layers=-1 if layers is None else layers,
            verbose=False,
            **kwargs,
        )
    except ValueError as exc:
        raise UserError(f"{model}: llama.cpp cannot load this file: {exc}") from exc
    try:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True)
        with _progress("perplexity", _scored_tokens(len(ids), context, stride), progress) as advance:
            start = time.perf_counter()
            total, count = gguf_window_nll(llama_cpp, llm.ctx, llm.n_vocab(), ids, context, stride, advance)
        return total, count, context, stride, time.perf_counter() - start
    finally:
        llm.close()


def _gguf_context(model: Path) -> int | None:
    """The trained context length stored in a GGUF's metadata (`{arch}.context_length`)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    try:
        reader = GGUFReader(str(model))
    except Exception as exc:  # gguf raises ValueError/struct errors/... on a damaged file
        raise UserError(f"{model}: not a readable GGUF file ({exc})") from exc
    for name, field in reader.fields.items():
        if name.endswith(".context_length") and field.data:
            return int(field.parts[field.data[0]][0])
    return None


def gguf_window_nll(llama_cpp, ctx, n_vocab: int, ids: list[int], context: int, stride: int, advance=None):
    """NLL over the windows with llama.cpp's C API: one decode per window, logits only where scored."""
    import numpy as np

    total, count = 0.0, 0
    for targets, rows in gguf_window_logits(llama_cpp, ctx, n_vocab, ids, context, stride):
        top = rows.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(rows - top).sum(axis=1, dtype=np.float32)) + top[:, 0]
        total += float((log_z - rows[np.arange(len(targets)), targets]).sum(dtype=np.float64))
        count += len(targets)
        if advance is not None:
            advance(len(targets))
    return total, count


def gguf_window_logits(llama_cpp, ctx, n_vocab: int, ids: list[int], context: int, stride: int):
    """(targets, logits rows predicting them) per window, as `gguf_window_nll` scores them.

    The rows are a view of llama.cpp's logits buffer: valid until the next window is decoded.
    """
    import numpy as np

    batch = llama_cpp.llama_batch_init(context, 0, 1)
    memory = llama_cpp.llama_get_memory(ctx)
    try:
        for begin, end, new in windows(len(ids), context, stride):
            n = end - begin
            new = min(new, n - 1)  # a window's first token has no context in it (as the shifted labels of hf_nll)
            first = n - new - 1  # the row predicting the first scored token
            for i, token in enumerate(ids[begin:end]):
                batch.token[i] = token
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = first <= i < n - 1
            batch.n_tokens = n
            llama_cpp.llama_memory_clear(memory, True)
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError(f"llama_decode failed on the window at token {begin}")
            rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(new, n_vocab))
            yield np.asarray(ids[end - new : end]), rows
    finally:
        llama_cpp.llama_batch_free(batch)
