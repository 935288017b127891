"""`zhllama ppo`: see `zhllama.core.alignment` (TRL on the training runner's conventions)."""

from __future__ import annotations

import typer

from zhllama.cli.options import examples
from zhllama.cli.training import build_command
from zhllama.core.alignment.config import PpoConfig


def run(cfg: PpoConfig) -> dict:
    from zhllama.core.alignment.tasks import ppo

    return ppo(cfg)


command = build_command(
    run,
    PpoConfig,
    "RL from a reward model with KL control (TRL RLOO, the replacement for PPO, which TRL 1.16 no longer has); LoRA policy, reward and KL curves.",
)


def register(app: typer.Typer) -> None:
    app.command(
        "ppo",
        epilog=examples(
            "zhllama ppo --model sft_merged --reward-model rm_lora --data prompts.jsonl --output ppo_lora --kl-coef 0.05 --max-steps 500",
            "zhllama ppo --model base --adapter sft_lora --reward-model rm_full --data prefs.jsonl --num-generations 8 --output ppo_lora",
        ),
    )(command)
