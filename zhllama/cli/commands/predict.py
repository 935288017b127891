"""`zhllama predict`: answers for a file of prompts, as CLA2's `inference_hf.py --data_file` does.

Flags and the summary line only; the work (checks, prompts, batches, the resumable log) is
`core.generation.predict.predict_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.commands.chat import answer_options_command
from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.options import examples
from zhllama.core import console
from zhllama.core.generation.options import AnswerOptions


@model_options_command
@answer_options_command
def predict(
    model_options: ModelOptions,
    answer: AnswerOptions,
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Prompts: .txt (one per line) or .jsonl (prompt/instruction).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="predictions.jsonl (resumed when it exists).")],
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts decoded together.")] = 8,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over instead of resuming an existing --output.")
    ] = False,
) -> None:
    """Answer every prompt of a file (batched, template applied, resumable) into a JSON-lines file."""
    from zhllama.core.generation.predict import predict_file

    run = predict_file(model_options, answer, input, output, batch_size, restart)
    console.emit(
        run.as_dict(),
        f"{run.generated} prompts answered, {run.skipped} already in {output}; "
        f"{run.completion_tokens} tokens in {run.seconds:.1f}s -> {output}",
    )


def register(app: typer.Typer) -> None:
    app.command(
        "predict",
        epilog=examples(
            "zhllama predict --model chinese-alpaca-2-7b --input questions.txt --output predictions.jsonl",
            "zhllama predict -m SmolLM2-135M-Instruct -i alpaca.jsonl -o out.jsonl --batch-size 16 --greedy",
            "zhllama --json predict -m model -i prompts.jsonl -o out.jsonl --seed 1 --temperature 0.7",
        ),
    )(predict)
