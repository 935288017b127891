"""The command of a multiple-choice exam plugin (C-Eval, CMMLU and any `Exam` subclass)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.commands.eval.common import local_inputs, model_id, open_for_eval
from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.schema import with_options
from zhllama.core import console, registry
from zhllama.core.evaluation.results import check_output_folder
from zhllama.core.evaluation.runner import McqSettings


def make_exam_command(name: str, examples: tuple[str, ...] = ()):
    """`zhllama eval NAME`: model flags and run settings generated from `ModelOptions`/`McqSettings`."""

    @model_options_command
    @with_options(McqSettings, "settings")
    def command(
        model_options: ModelOptions,
        settings: McqSettings,
        data_dir: Annotated[Path, typer.Option("--data-dir", help="Benchmark folder in the official layout.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Results folder (resumable).")],
        plot: Annotated[bool, typer.Option("--plot", help="Also write a bar chart per category.")] = False,
    ) -> None:
        from zhllama.core.evaluation.runner import load_exam, run_mcq

        benchmark = registry.load("benchmarks", name)()
        model_options = model_options.validated()
        settings = settings.checked(benchmark)
        check_output_folder(output, local_inputs(model_options, data_dir))
        exam = load_exam(benchmark, data_dir, settings)  # every data file checked before the model loads
        loaded = open_for_eval(model_options)
        try:
            summary = run_mcq(
                benchmark, loaded, data_dir, output, settings, model_id=model_id(model_options), plot=plot, exam=exam
            )
        finally:
            loaded.close()
        rows = [(c, v["correct"], v["total"], round(v["accuracy"], 2)) for c, v in summary["categories"].items()]
        overall = summary["overall"]
        rows.append(("overall", overall["correct"], overall["total"], round(overall["accuracy"], 2)))
        title = f"{name} {settings.split} ({settings.shots}-shot, {settings.mode}, {settings.prompt_style})"
        console.emit(summary, console.table(title, ["category", "correct", "total", "accuracy %"], rows))

    description = registry.load("benchmarks", name, check_requirements=False).description
    command.__doc__ = f"{description}; writes summary.json and predictions.jsonl."
    command.examples = examples
    return command
