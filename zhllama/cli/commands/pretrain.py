"""`zhllama pretrain`: continued pre-training with LoRA + fully trained embeddings."""

from __future__ import annotations

import typer

from zhllama.cli.options import examples
from zhllama.cli.training import build_command
from zhllama.core.training.config import PretrainConfig


def pretrain(cfg: PretrainConfig) -> dict:
    from zhllama.core.training.tasks import pretrain

    return pretrain(cfg)


command = build_command(
    pretrain,
    PretrainConfig,
    "Continued pre-training on plain text (.txt lines or .jsonl 'text'), LoRA by default.",
)


def register(app: typer.Typer) -> None:
    app.command(
        "pretrain",
        epilog=examples(
            "zhllama pretrain --model llama-7b --tokenizer merged_tokenizer --data zh_corpus/ --output pt_lora "
            "--max-steps 1000 --block-size 512",
            "torchrun --nproc_per_node 8 -m zhllama pretrain --model llama-7b --data zh_corpus/ --output pt_lora "
            "--deepspeed zero2 --bf16",
        ),
    )(command)
