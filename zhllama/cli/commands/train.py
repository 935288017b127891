"""`zhllama pretrain | sft | rm | dpo | ppo`: the training commands, one table (`zhllama.cli.training`)."""

from __future__ import annotations

import typer

from zhllama.cli.training import register_training


def register(app: typer.Typer) -> None:
    register_training(app)
