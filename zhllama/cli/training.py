"""The training commands (pretrain, sft, rm, dpo, ppo): one table, flags generated from each task's config.

`TRAINING_COMMANDS` is the table: command name, the config class (in a torch-free module), the task
function that runs it (imported when the command runs), the help text and the `--help` examples.
`build_command(task, config_cls, doc)` makes a Typer command function whose flags are generated
from the dataclass `config_cls` (composed of the option groups of `zhllama.core.training.options`):
one flag per field, help text from the field's metadata, defaults from the dataclass (declared
nowhere else). A task leaves out a group it cannot honour, so its `--help` lists only the flags it
accepts. The command builds `config_cls(...)` from the flags (a YAML `--config` fills the same
flags, so it is validated by the same types) and calls `task(cfg)`, which returns the run summary;
rank 0 prints it (`--json` or a table).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from zhllama.cli.options import examples
from zhllama.core import console
from zhllama.core.schema import from_values


@dataclass(frozen=True)
class TrainingCommand:
    name: str
    config: str  # "module:Class" of the config (imports no torch)
    task: str  # "module:function" that runs it (imported when the command runs)
    help: str
    examples: tuple[str, ...]


TRAINING_COMMANDS = (
    TrainingCommand(
        "pretrain",
        "zhllama.core.training.config:PretrainConfig",
        "zhllama.core.training.tasks:pretrain",
        "Continued pre-training on plain text (.txt lines or .jsonl 'text'), LoRA by default.",
        (
            "zhllama pretrain --model llama-7b --tokenizer merged_tokenizer --data zh_corpus/ --output pt_lora "
            "--max-steps 1000 --block-size 512",
            "torchrun --nproc_per_node 8 -m zhllama pretrain --model llama-7b --data zh_corpus/ --output pt_lora "
            "--deepspeed zero2 --bf16",
        ),
    ),
    TrainingCommand(
        "sft",
        "zhllama.core.training.config:SftConfig",
        "zhllama.core.training.tasks:sft",
        "Instruction tuning on Alpaca JSON/JSONL or multi-turn conversations; loss on answer tokens only.",
        (
            "zhllama sft --model chinese-llama-2 --data alpaca_zh.json --output sft_lora --learning-rate 1e-4 "
            "--max-seq-length 512",
            "zhllama sft --model base --adapter pt_lora --data chats.jsonl --template chatml --packing --output sft_lora",
        ),
    ),
    TrainingCommand(
        "rm",
        "zhllama.core.alignment.config:RmConfig",
        "zhllama.core.alignment.tasks:rm",
        "Reward model from preference pairs (chosen vs rejected): a one-score sequence-classification head, "
        "LoRA or full; reports pairwise accuracy.",
        (
            "zhllama rm --model chinese-alpaca-2-7b --data prefs.jsonl --output rm_lora --validation-split 0.05 "
            "--learning-rate 2e-5",
            "zhllama rm --model sft_merged --data prefs.json --template chatml --full --output rm_full "
            "--num-train-epochs 1",
        ),
    ),
    TrainingCommand(
        "dpo",
        "zhllama.core.alignment.config:DpoConfig",
        "zhllama.core.alignment.tasks:dpo",
        "Direct preference optimisation (TRL DPOTrainer) on prompt/chosen/rejected pairs; with LoRA the "
        "reference is the model with the adapter disabled.",
        (
            "zhllama dpo --model chinese-alpaca-2-7b --data prefs.jsonl --output dpo_lora --beta 0.1 --learning-rate 5e-6",
            "zhllama dpo --model base --adapter sft_lora --data prefs.jsonl --loss ipo --beta 0.5 --output dpo_lora",
            "zhllama dpo --model base --data prefs.jsonl --loss sigmoid,sft --loss-weights 1,0.2 --output mpo_lora",
        ),
    ),
    TrainingCommand(
        "ppo",
        "zhllama.core.alignment.config:PpoConfig",
        "zhllama.core.alignment.tasks:ppo",
        "RL from a reward model with KL control (TRL RLOO, the replacement for PPO, which TRL 1.16 no longer "
        "has); LoRA policy, reward and KL curves.",
        (
            "zhllama ppo --model sft_merged --reward-model rm_lora --data prompts.jsonl --output ppo_lora "
            "--kl-coef 0.05 --max-steps 500",
            "zhllama ppo --model base --adapter sft_lora --reward-model rm_full --data prefs.jsonl "
            "--num-generations 8 --output ppo_lora",
        ),
    ),
)


def _named(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def report(summary: dict, output) -> None:
    """Print a run summary (rank 0 only under torchrun / accelerate)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    rows = [
        ("steps", summary["steps"]),
        ("tokens", summary["tokens"]),
        ("first loss", summary["first_loss"] if summary["first_loss"] is not None else "-"),
        ("final loss", summary["final_loss"]),
        ("tokens/s", round(summary["tokens_per_second"], 1)),
    ]
    if "eval_perplexity" in summary:
        rows.append(("eval perplexity", summary["eval_perplexity"]))
    rows.append(("output", str(output)))
    console.emit(summary, console.table(f"{summary['kind']} done", ["", "value"], rows))


def build_command(task: Callable[[Any], dict], config: type, doc: str) -> Callable:
    """A Typer command function whose flags come from the dataclass `config` (see the module docstring)."""
    from zhllama.cli.schema import parameters

    def command(**kwargs: Any) -> None:
        report(task(from_values(config, kwargs)), kwargs["output"])

    params = parameters(config)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command


def register_training(app: typer.Typer, names: tuple[str, ...] | None = None) -> None:
    """Add the training commands of the table (all, or `names`) to `app`."""
    for row in TRAINING_COMMANDS:
        if names is not None and row.name not in names:
            continue

        def task(cfg, path: str = row.task) -> dict:
            return _named(path)(cfg)

        command = build_command(task, _named(row.config), row.help)
        app.command(row.name, epilog=examples(*row.examples))(command)
