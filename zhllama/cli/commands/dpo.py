"""`zhllama dpo`: see `zhllama.core.alignment` (TRL on the training runner's conventions)."""

from __future__ import annotations

import typer

from zhllama.cli.options import examples
from zhllama.cli.training import build_command
from zhllama.core.alignment.config import DpoConfig


def run(cfg: DpoConfig) -> dict:
    from zhllama.core.alignment.tasks import dpo

    return dpo(cfg)


command = build_command(
    run,
    DpoConfig,
    "Direct preference optimisation (TRL DPOTrainer) on prompt/chosen/rejected pairs; with LoRA the reference is the model with the adapter disabled.",
)


def register(app: typer.Typer) -> None:
    app.command(
        "dpo",
        epilog=examples(
            "zhllama dpo --model chinese-alpaca-2-7b --data prefs.jsonl --output dpo_lora --beta 0.1 --learning-rate 5e-6",
            "zhllama dpo --model base --adapter sft_lora --data prefs.jsonl --loss ipo --beta 0.5 --output dpo_lora",
            "zhllama dpo --model base --data prefs.jsonl --loss sigmoid,sft --loss-weights 1,0.2 --output mpo_lora",
        ),
    )(command)
