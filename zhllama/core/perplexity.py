"""Sliding-window perplexity that scores every token exactly once (`zhllama eval ppl`).

Windows of `context` tokens advance by `stride`; in each window only the tokens not scored by an
earlier window count, conditioned on up to `context` tokens before them. With stride == context
the windows are disjoint; with a smaller stride later tokens see more left context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from zhllama.core.errors import MissingDependencyError, UserError


@dataclass
class PplResult:
    model: str
    data: str
    perplexity: float
    nll: float
    tokens_scored: int
    context: int
    stride: int


def read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise UserError(f"{path}: text file is empty")
    return text


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_new) for each window; n_new tokens at the end of the window are scored."""
    if context < 2 or stride < 1 or stride > context:
        raise UserError(f"--context {context} / --stride {stride}: need context >= 2 and 1 <= stride <= context")
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


def hf_nll(model, ids: list[int], context: int, stride: int, batch_size: int = 1) -> tuple[float, int]:
    """Total negative log-likelihood and the number of tokens scored."""
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
        with torch.no_grad():
            logits = model(input_ids=inputs, attention_mask=mask).logits.float()
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(losses)
        count += int((labels[:, 1:] != -100).sum())
    return total, count


def _llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def perplexity(
    model: str | Path,
    data: str | Path,
    context: int = 4096,
    stride: int | None = None,
    batch_size: int = 1,
    tokenizer: str | Path | None = None,
    backend: str = "auto",
) -> PplResult:
    """PPL of an HF folder (incl. bnb/GPTQ checkpoints) or a .gguf file.

    A .gguf goes through llama.cpp when llama-cpp-python is installed; otherwise transformers
    dequantizes it (`gguf_file=`), which needs `tokenizer` (the source model's folder) for ids.
    `backend="transformers"` forces the latter (to compare methods with one tokenizer and one code path).
    """
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer

    model, data = Path(model), Path(data)
    text = read_text(data)
    stride = stride or context
    if model.suffix == ".gguf" and backend != "transformers" and _llama_cpp_available():
        total, count = _gguf_nll(model, text, context, stride)
    else:
        if model.suffix == ".gguf":
            if tokenizer is None:
                raise MissingDependencyError(
                    f"{model}: perplexity of a .gguf needs llama-cpp-python (pip install 'zhllama[llamacpp]'), "
                    "or --tokenizer DIR to score it through transformers"
                )
            hf_model = AutoModelForCausalLM.from_pretrained(str(model.parent), gguf_file=model.name).eval()
        elif (model / "config.json").is_file():
            hf_model = AutoModelForCausalLM.from_pretrained(str(model), trust_remote_code=False).eval()
        else:
            raise UserError(f"{model}: not a model folder (no config.json) or .gguf file")
        tok = ZhTokenizer(tokenizer or model)
        context = min(context, getattr(hf_model.config, "max_position_embeddings", context))
        stride = min(stride, context)
        total, count = hf_nll(hf_model, tok.encode(text, bos=True), context, stride, batch_size)
    if count == 0:
        raise UserError(f"{data}: text has fewer than 2 tokens; nothing to score")
    return PplResult(str(model), str(data), math.exp(total / count), total, count, context, stride)


def _gguf_nll(model: Path, text: str, context: int, stride: int) -> tuple[float, int]:
    """The same windows through llama.cpp (llama-cpp-python), for .gguf files."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise MissingDependencyError(
            "perplexity of a .gguf file needs llama-cpp-python; install it with: pip install 'zhllama[llamacpp]'"
        ) from exc
    import numpy as np

    llm = Llama(model_path=str(model), n_ctx=context, logits_all=True, verbose=False)
    try:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True)
        total, count = 0.0, 0
        for begin, end, new in windows(len(ids), context, stride):
            llm.reset()
            llm.eval(ids[begin:end])
            logits = np.asarray(llm.scores[: end - begin], dtype=np.float64)
            logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
            for pos in range(end - begin - new, end - begin):
                total -= float(logp[pos - 1, ids[begin + pos]])
                count += 1
        return total, count
    finally:
        llm.close()
