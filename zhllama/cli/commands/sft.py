"""`zhllama sft`: instruction tuning with prompt templates and loss on answers only."""

from __future__ import annotations

import typer

from zhllama.cli.options import examples
from zhllama.cli.training import build_command, option
from zhllama.core.training import sft

command = build_command(
    sft,
    [
        option("template", str, "llama2-zh", help="Prompt template (see `zhllama plugins`)."),
        option("system_prompt", str | None, None, help="Override the template's system prompt."),
        option("max_seq_length", int, 512, help="Right-truncate examples to this many tokens."),
        option("packing", bool, False, help="Pack several examples per sequence (no cross-example attention)."),
    ],
    "Instruction tuning on Alpaca JSON/JSONL or multi-turn conversations; loss on answer tokens only.",
)


def register(app: typer.Typer) -> None:
    app.command(
        "sft",
        epilog=examples(
            "zhllama sft --model chinese-llama-2 --data alpaca_zh.json --output sft_lora --learning-rate 1e-4 "
            "--max-seq-length 512",
            "zhllama sft --model base --adapter pt_lora --data chats.jsonl --template chatml --packing --output sft_lora",
        ),
    )(command)
