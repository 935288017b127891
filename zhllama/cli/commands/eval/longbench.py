"""`zhllama eval longbench` (also `zhllama longbench`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.commands.eval.common import local_inputs, model_id, open_for_eval
from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.schema import with_options
from zhllama.core import console, registry
from zhllama.core.evaluation.longbench import LongBenchSettings
from zhllama.core.evaluation.results import check_output_folder


@model_options_command
@with_options(LongBenchSettings, "settings")
def command(
    model_options: ModelOptions,
    settings: LongBenchSettings,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Folder of {task}.jsonl files (official format).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder (resumable).")],
) -> None:
    """LongBench / LongBench-E: official prompts and metrics; writes summary.json and predictions.jsonl."""
    from zhllama.core.evaluation.longbench import load_samples, run_longbench

    benchmark = registry.load("benchmarks", "longbench")()
    model_options = model_options.validated()
    configs = benchmark.tasks(data_dir)
    settings.checked(configs)  # options and data checked before the model loads
    check_output_folder(output, local_inputs(model_options, data_dir))
    samples = load_samples(benchmark, data_dir, settings.checked(configs))
    loaded = open_for_eval(model_options)
    try:
        summary = run_longbench(
            benchmark, loaded, data_dir, output, settings, model_id=model_id(model_options), samples=samples
        )
    finally:
        loaded.close()
    buckets = ("0-4k", "4-8k", "8k+") if settings.e else ()
    rows = []
    for task, v in summary["tasks"].items():
        rows.append((task, v["samples"], round(v["score"], 2), *(_pct(v["buckets"][b]) for b in buckets)))
    rows += [(f"[{c}]", "", round(v, 2), *("" for _ in buckets)) for c, v in summary["categories"].items()]
    rows.append(("average", "", round(summary["average"], 2), *(_pct(summary["buckets"][b]) for b in buckets)))
    title = f"{summary['benchmark']} (max length {summary['settings']['max_length']})"
    console.emit(summary, console.table(title, ["task", "samples", "score", *buckets], rows))


def _pct(value: float | None):
    return "-" if value is None else round(value, 2)


command.examples = (
    "zhllama eval longbench --model merged --data-dir longbench --output results/lb --tasks dureader,lsht",
    "zhllama eval longbench --model merged-16k --rope-scaling ntk --rope-factor 4 --max-length 15872 "
    "--data-dir longbench --output results/lb16k",
    "zhllama eval longbench --model merged --data-dir longbench-e --output results/lb-e --e --tasks lcc,repobench-p",
)
