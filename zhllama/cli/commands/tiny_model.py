"""`zhllama tiny-model`: a random, seeded LLaMA checkpoint for a tokenizer (tests, demos, CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, Seed, examples
from zhllama.core import console
from zhllama.core.tiny import TinyShape, build_tiny_llama


def tiny_model(
    tokenizer: Annotated[
        Path, typer.Option("--tokenizer", "-t", help="Tokenizer folder; its size sets the vocabulary.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output model folder.")],
    hidden_size: Annotated[int, typer.Option("--hidden-size")] = 64,
    layers: Annotated[int, typer.Option("--layers")] = 2,
    heads: Annotated[int, typer.Option("--heads")] = 4,
    kv_heads: Annotated[int, typer.Option("--kv-heads")] = 2,
    intermediate_size: Annotated[int, typer.Option("--intermediate-size")] = 176,
    seed: Seed = 0,
    force: Force = False,
) -> None:
    """Write a tiny random LLaMA (safetensors + tokenizer) that loads with from_pretrained."""
    shape = TinyShape(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
    )
    path = build_tiny_llama(output, tokenizer=tokenizer, seed=seed, shape=shape, force=force)
    size = sum(f.stat().st_size for f in path.iterdir())
    console.emit(
        {"output": str(path), "bytes": size}, console.table("tiny-model", ["output", "bytes"], [(str(path), size)])
    )


def register(app: typer.Typer) -> None:
    app.command("tiny-model", epilog=examples("zhllama tiny-model --tokenizer merged_tokenizer --output tiny_base"))(
        tiny_model
    )
