"""`zhllama sft`: instruction tuning with prompt templates and loss on answers only."""

from __future__ import annotations

import typer

from zhllama.cli.options import examples
from zhllama.cli.training import build_command
from zhllama.core.training.config import SftConfig


def sft(cfg: SftConfig) -> dict:
    from zhllama.core.training.tasks import sft

    return sft(cfg)


command = build_command(
    sft,
    SftConfig,
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
