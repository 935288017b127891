"""`zhllama eval longbench` (registered by `cli/commands/eval.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.core import console, registry


def longbench_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="HF model folder or .gguf file.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Folder of {task}.jsonl files (official format).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder (resumable).")],
    tasks: Annotated[str | None, typer.Option("--tasks", help="Comma-separated tasks (default: all shipped).")] = None,
    max_length: Annotated[
        int, typer.Option("--max-length", help="Prompt tokens; longer prompts lose their middle.")
    ] = 3584,
    template: Annotated[str | None, typer.Option("--template", help="Wrap prompts in an sft template.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most N samples per task.")] = None,
    lora: Annotated[list[Path] | None, typer.Option("--lora", help="LoRA adapter(s) on top of --model.")] = None,
    load: Annotated[str | None, typer.Option("--load", help="4bit or 8bit (bitsandbytes).")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="transformers, llamacpp or vllm.")] = None,
) -> None:
    """LongBench Chinese + code tasks: official prompts and metrics; writes summary.json and predictions.jsonl."""
    from zhllama.cli.commands.eval import open_for_eval
    from zhllama.core.evaluation.longbench import run_longbench

    benchmark = registry.load("benchmarks", "longbench")()
    loaded = open_for_eval(model, engine, lora, load)
    try:
        summary = run_longbench(
            benchmark,
            loaded,
            data_dir,
            output,
            [t.strip() for t in tasks.split(",")] if tasks else None,
            max_length,
            template,
            limit,
            model_id=f"{model}|{','.join(map(str, lora or []))}|{load}",
        )
    finally:
        loaded.close()
    rows = [(t, v["samples"], round(v["score"], 2)) for t, v in summary["tasks"].items()]
    rows += [(f"[{c}]", "", round(v, 2)) for c, v in summary["categories"].items()]
    rows.append(("average", "", round(summary["average"], 2)))
    console.emit(summary, console.table("longbench", ["task", "samples", "score"], rows))
