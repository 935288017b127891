"""`zhllama eval ppl`: sliding-window perplexity of an HF folder, quantized checkpoint or .gguf."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.core import console
from zhllama.core.perplexity import perplexity


def ppl(
    model: Annotated[Path, typer.Option("--model", "-m", help="HF folder (also bnb/GPTQ checkpoints) or .gguf file.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="UTF-8 text file, scored as one document.")],
    context: Annotated[int, typer.Option("--context", help="Window length in tokens.")] = 4096,
    stride: Annotated[
        int | None, typer.Option("--stride", help="Window step (default: --context); each token is scored once.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass (HF models).")] = 1,
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="Tokenizer folder for a .gguf scored without llama.cpp.")
    ] = None,
) -> None:
    """Perplexity with a sliding window; prints PPL and the number of tokens scored."""
    result = perplexity(model, data, context=context, stride=stride, batch_size=batch_size, tokenizer=tokenizer)
    rows = [
        ("perplexity", round(result.perplexity, 4)),
        ("tokens scored", result.tokens_scored),
        ("context / stride", f"{result.context} / {result.stride}"),
        ("model", result.model),
    ]
    console.emit(result.__dict__, console.table(f"perplexity on {data}", ["", "value"], rows))
