"""`zhllama eval ppl`: sliding-window perplexity of an HF folder, quantized checkpoint or .gguf."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.options import examples
from zhllama.core import console


@model_options_command
def ppl(
    model_options: ModelOptions,
    data: Annotated[Path, typer.Option("--data", "-d", help="UTF-8 text file, scored as one document.")],
    context: Annotated[
        int | None, typer.Option("--context", help="Window length in tokens (default: the model's context).")
    ] = None,
    stride: Annotated[
        int | None, typer.Option("--stride", help="Window step (default: --context); each token is scored once.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass (transformers).")] = 1,
    tokenizer: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="Tokenizer folder; with a .gguf it means: score it through transformers."),
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="auto, transformers or llamacpp (.gguf only; auto: llamacpp for .gguf).")
    ] = "auto",
) -> None:
    """Perplexity with a sliding window; prints PPL, tokens scored and tokens/s."""
    from zhllama.core.perplexity import perplexity

    result = perplexity(
        model_options, data, context=context, stride=stride, batch_size=batch_size, tokenizer=tokenizer, backend=backend
    )
    rows = [
        ("perplexity", round(result.perplexity, 4)),
        ("tokens scored", result.tokens_scored),
        ("context / stride", f"{result.context} / {result.stride}"),
        ("backend", result.backend),
        ("tokens/s", round(result.tokens_per_second, 1)),
        ("model", result.model),
    ]
    summary = {**result.__dict__, "tokens_per_second": result.tokens_per_second}
    console.emit(summary, console.table(f"perplexity on {data}", ["", "value"], rows))


def register(app: typer.Typer) -> None:
    app.command(
        "ppl",
        epilog=examples(
            "zhllama eval ppl --model merged --data zh_wiki.txt --context 4096 --stride 2048",
            "zhllama eval ppl --model model-q4_0.gguf --data zh_wiki.txt --context 512",
            "zhllama eval ppl --model model-q4_0.gguf --tokenizer merged --data zh_wiki.txt  # through transformers",
        ),
    )(ppl)
