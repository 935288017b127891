"""`zhllama merge`: fold one or more LoRA adapters into a base model, shard by shard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, examples
from zhllama.core import console


def merge_command(
    base: Annotated[
        str,
        typer.Option(
            "--base",
            help="Base model: HF folder (safetensors or .bin shards), hub id org/name[@rev], or a Meta "
            "consolidated.*.pth folder.",
        ),
    ],
    lora: Annotated[list[Path], typer.Option("--lora", help="Adapter folder(s), applied in the order given.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Merged model folder.")],
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="fp16/float16/half, bf16/bfloat16 or fp32/float32 (default: the base's)."),
    ] = None,
    shard_size: Annotated[str, typer.Option("--shard-size", help="Maximum output shard size.")] = "2GB",
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="Tokenizer to ship (default: the last adapter's).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="hf (safetensors shards) or pth (Meta consolidated.*.pth).")
    ] = "hf",
    verify: Annotated[
        bool, typer.Option("--verify", help="Compare logits with PEFT merge_and_unload on a probe.")
    ] = False,
    force: Force = False,
) -> None:
    """Merge LoRA adapters into a base model with memory of about one shard; writes atomically.

    Each adapter's zhllama_overrides.json (rope scaling, context length) is applied, in order, to the
    merged config.json; the model's rope scaling is kept in every output format.
    """
    from zhllama.core.checkpoint.shards import base_shards
    from zhllama.core.checkpoint.sources import resolve_model
    from zhllama.core.lora_merge import merge
    from zhllama.core.paths import check_output

    check_output(output, [base, *lora, tokenizer])
    resolved = resolve_model(base, folder_only=True)
    shards = base_shards(resolved)
    with console.progress_task("merging shards", len(shards)) as advance:
        result = merge(
            resolved,
            lora,
            output,
            dtype=dtype,
            shard_size=shard_size,
            tokenizer=tokenizer,
            fmt=fmt,
            verify=verify,
            force=force,
            progress=advance,
        )
    rows = [
        ("output", result.output),
        ("format / dtype", f"{fmt} / {result.dtype}"),
        ("tensors", result.tensors),
        ("LoRA deltas merged", result.merged_lora),
        ("tensors replaced (embeddings)", result.replaced),
        ("vocab size", result.vocab_size),
        ("output shards", result.shards),
        ("seconds", round(result.seconds, 2)),
    ]
    if result.verify_max_abs_diff is not None:
        rows.append(("verify: max |logits diff| vs PEFT", f"{result.verify_max_abs_diff:.3g}"))
    console.emit(result.__dict__, console.table("merge", ["", "value"], rows))


def register(app: typer.Typer) -> None:
    app.command(
        "merge",
        epilog=examples(
            "zhllama merge --base llama-2-7b --lora chinese-llama-2-lora --output chinese-llama-2-7b",
            "zhllama merge --base llama-7b --lora llama-plus-lora --lora alpaca-plus-lora --output alpaca-plus "
            "--dtype fp16 --verify",
            "zhllama merge --base llama-7b --lora pt_lora --format pth --output pth_model",
        ),
    )(merge_command)
