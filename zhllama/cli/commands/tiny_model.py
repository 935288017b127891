"""`zhllama tiny-model`: a random, seeded LLaMA checkpoint for a tokenizer (tests, demos, CI).

The shape flags are generated from `TinyShape` (`zhllama/core/tiny.py`), so their defaults are
declared once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, Seed, examples
from zhllama.cli.schema import with_options
from zhllama.core import console
from zhllama.core.tiny import TinyShape


@with_options(TinyShape, "shape")
def tiny_model(
    tokenizer: Annotated[
        Path, typer.Option("--tokenizer", "-t", help="Tokenizer folder; its size sets the vocabulary.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output model folder.")],
    seed: Seed = 0,
    force: Force = False,
    shape: TinyShape | None = None,
) -> None:
    """Write a tiny random LLaMA (safetensors + tokenizer) that loads with from_pretrained."""
    from zhllama.core.paths import check_output
    from zhllama.core.tiny import build_tiny_llama

    shape = shape.validated()
    check_output(output, [tokenizer])
    path = build_tiny_llama(output, tokenizer=tokenizer, seed=seed, shape=shape, force=force)
    size = sum(f.stat().st_size for f in path.iterdir())
    console.emit(
        {"output": str(path), "bytes": size}, console.table("tiny-model", ["output", "bytes"], [(str(path), size)])
    )


def register(app: typer.Typer) -> None:
    app.command("tiny-model", epilog=examples("zhllama tiny-model --tokenizer merged_tokenizer --output tiny_base"))(
        tiny_model
    )
