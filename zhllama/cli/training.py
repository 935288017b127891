"""Flags shared by `zhllama pretrain` and `zhllama sft`, declared once.

Both commands are built by `build_command`, which composes the shared parameters with the
command's own into one signature that Typer reads, so no flag is declared twice.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from zhllama.core import console
from zhllama.core.training.runner import DEFAULT_TARGETS, TrainConfig


def option(name: str, annotation: Any, default: Any, *flags: str, help: str) -> inspect.Parameter:
    flags = flags or (f"--{name.replace('_', '-')}",)
    kwargs = {"help": help}
    if default is ...:
        kwargs["show_default"] = False
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*flags, **kwargs)],
    )


SHARED: list[inspect.Parameter] = [
    option("model", Path, ..., "--model", "-m", help="Base model folder (HF layout)."),
    option("data", list[Path], ..., "--data", "-d", help="Data file(s) or folder(s)."),
    option("output", Path, ..., "--output", "-o", help="Output folder (adapter or full model, summary, loss.png)."),
    option(
        "tokenizer", Path | None, None, help="Tokenizer folder (default: the model's); a larger one resizes the model."
    ),
    option("lora_rank", int, 64, help="LoRA rank r."),
    option("lora_alpha", int, 128, help="LoRA alpha."),
    option("lora_dropout", float, 0.05, help="LoRA dropout."),
    option("lora_targets", str, DEFAULT_TARGETS, help="Comma-separated module names that get LoRA."),
    option("modules_to_save", str, "embed_tokens,lm_head", help="Modules trained fully and saved in the adapter."),
    option("full", bool, False, help="Full-parameter training instead of LoRA."),
    option("qlora", int | None, None, help="Load the base in 4 or 8 bit (bitsandbytes) and train LoRA on it."),
    option("adapter", Path | None, None, help="Continue training this existing LoRA adapter."),
    option("learning_rate", float, 2e-4, help="Peak learning rate."),
    option("num_train_epochs", float, 1.0, help="Epochs (ignored when --max-steps > 0)."),
    option("max_steps", int, -1, help="Total optimizer steps (-1: from epochs)."),
    option("per_device_train_batch_size", int, 1, help="Batch size per device."),
    option("per_device_eval_batch_size", int, 1, help="Eval batch size per device."),
    option("gradient_accumulation_steps", int, 1, help="Micro-batches per optimizer step."),
    option("lr_scheduler_type", str, "cosine", help="linear, cosine, constant, ..."),
    option("warmup_ratio", float, 0.05, help="Share of steps used for warm-up."),
    option("weight_decay", float, 0.0, help="AdamW weight decay."),
    option("logging_steps", int, 10, help="Log every N steps."),
    option("save_steps", int, 200, help="Checkpoint every N steps."),
    option("eval_steps", int | None, None, help="Evaluate every N steps (needs --validation-split)."),
    option("save_total_limit", int | None, 3, help="Keep at most N checkpoints."),
    option("seed", int, 42, help="Random seed."),
    option("bf16", bool, False, help="bfloat16 mixed precision."),
    option("fp16", bool, False, help="float16 mixed precision (GPU)."),
    option("gradient_checkpointing", bool, False, help="Trade compute for memory."),
    option("attn", str, "sdpa", help="Attention implementation: sdpa, flash_attention_2 or eager."),
    option("deepspeed", str | None, None, help="DeepSpeed JSON config, or zero2 / zero3 for the shipped ones."),
    option("report_to", str, "none", help="Comma-separated loggers (tensorboard, wandb) or none."),
    option("validation_split", float, 0.0, help="Fraction held out for evaluation (perplexity)."),
    option("cache_dir", Path | None, None, help="Tokenized-data cache (default ~/.cache/zhllama/datasets)."),
    option("resume", bool, False, help="Continue from the newest checkpoint in --output."),
    option("force", bool, False, help="Replace an existing non-empty --output."),
]


def build_command(task: Callable[[TrainConfig], dict], own: list[inspect.Parameter], doc: str) -> Callable:
    """A Typer command function whose flags are SHARED + `own`; `own` values go to TrainConfig.extra."""
    own_names = [p.name for p in own]

    def command(**kwargs: Any) -> None:
        extra = {name: kwargs.pop(name) for name in own_names}
        summary = task(TrainConfig(**kwargs, extra=extra))
        if int(os.environ.get("RANK", "0")) != 0:
            return  # under torchrun / accelerate only the main process reports
        rows = [
            ("steps", summary["steps"]),
            ("tokens", summary["tokens"]),
            ("first loss", summary["first_loss"] if summary["first_loss"] is not None else "-"),
            ("final loss", summary["final_loss"]),
            ("tokens/s", round(summary["tokens_per_second"], 1)),
        ]
        if "eval_perplexity" in summary:
            rows.append(("eval perplexity", summary["eval_perplexity"]))
        rows.append(("output", str(kwargs["output"])))
        console.emit(summary, console.table(f"{summary['kind']} done", ["", "value"], rows))

    params = SHARED + own
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command
