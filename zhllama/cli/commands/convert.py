"""`zhllama convert`: checkpoints between HF, Meta (consolidated.NN.pth) and TencentPretrain layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, examples
from zhllama.core import console

FORMATS = "hf, meta or tencentpretrain"


def convert_command(
    source: Annotated[Path, typer.Option("--input", "-i", help="Checkpoint folder to read.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (atomically).", show_default=False)],
    src: Annotated[str, typer.Option("--from", help=f"Layout of --input: {FORMATS}.")] = "meta",
    dst: Annotated[str, typer.Option("--to", help=f"Layout to write: {FORMATS}.")] = "hf",
    force: Force = False,
) -> None:
    """Convert a LLaMA checkpoint between layouts; tensors are carried bit for bit.

    meta: consolidated.NN.pth + params.json + tokenizer.model (Meta's release layout; shards
    concatenated, q/k permuted to HF's rotary layout). tencentpretrain: model.bin + TencentPretrain's
    llama config.json + tokenizer.model (Chinese-ChatLLaMA). Rope scaling travels with the model.
    """
    from zhllama.core.checkpoint.convert import convert

    with console.progress_task(f"converting {src} -> {dst}", None):
        result = convert(source, output, src=src, dst=dst, force=force)
    rows = [(key, str(value)) for key, value in result.items()]
    console.emit(result, console.table("convert", ["", "value"], rows))


def register(app: typer.Typer) -> None:
    app.command(
        "convert",
        epilog=examples(
            "zhllama convert --from meta --to hf --input LLaMA/7B --output llama-7b-hf",
            "zhllama convert --from hf --to meta --input chinese-llama-2-7b --output chinese-llama-2-7b-pth",
            "zhllama convert --from tencentpretrain --to hf --input chatllama-7b --output chatllama-7b-hf",
        ),
    )(convert_command)
