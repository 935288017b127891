"""`zhllama rm`: see `zhllama.core.alignment` (TRL on the training runner's conventions)."""

from __future__ import annotations

import typer

from zhllama.cli.options import examples
from zhllama.cli.training import build_command
from zhllama.core.alignment.config import RmConfig


def run(cfg: RmConfig) -> dict:
    from zhllama.core.alignment.tasks import rm

    return rm(cfg)


command = build_command(
    run,
    RmConfig,
    "Reward model from preference pairs (chosen vs rejected): a one-score sequence-classification head, LoRA or full; reports pairwise accuracy.",
)


def register(app: typer.Typer) -> None:
    app.command(
        "rm",
        epilog=examples(
            "zhllama rm --model chinese-alpaca-2-7b --data prefs.jsonl --output rm_lora --validation-split 0.05 --learning-rate 2e-5",
            "zhllama rm --model sft_merged --data prefs.json --template chatml --full --output rm_full --num-train-epochs 1",
        ),
    )(command)
