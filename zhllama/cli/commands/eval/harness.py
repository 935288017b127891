"""`zhllama eval harness`: lm-evaluation-harness tasks on any zhllama model source.

The model is opened by `open_model` from the usual model flags (HF folder, .gguf, LoRA stack,
Meta/TencentPretrain folder, any engine) and handed to `lm_eval.simple_evaluate` as the registered
`zhllama` model (`zhllama.harness.lm.ZhllamaLM`). Results (lm-eval's results dict, plus the
per-sample records with `--log-samples`) are written atomically into `--output`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.options import Force, examples
from zhllama.core import console
from zhllama.core.errors import UserError


@model_options_command
def harness(
    model_options: ModelOptions,
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated lm-eval task or group names.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder (results.json, samples).")],
    include_path: Annotated[
        list[Path] | None, typer.Option("--include-path", help="Folder of extra task YAMLs (repeatable).")
    ] = None,
    num_fewshot: Annotated[
        int | None, typer.Option("--num-fewshot", help="Few-shot examples (default: the task's).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most N documents per task (N >= 1).")] = None,
    log_samples: Annotated[bool, typer.Option("--log-samples", help="Also write every request and response.")] = False,
    max_gen_toks: Annotated[int, typer.Option("--max-gen-toks", help="generate_until: default answer length.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of lm-eval's few-shot sampling and of sampling.")] = 1234,
    force: Force = False,
) -> None:
    """Run lm-evaluation-harness tasks (loglikelihood, rolling, generate_until) on a zhllama model."""
    import json

    from zhllama.core.atomic import atomic_dir
    from zhllama.core.paths import check_output
    from zhllama.harness import register

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise UserError("--tasks: give at least one task name")
    if limit is not None and limit < 1:
        raise UserError(f"--limit: must be at least 1, got {limit}")
    if num_fewshot is not None and num_fewshot < 0:
        raise UserError(f"--num-fewshot: must be 0 or more, got {num_fewshot}")
    if max_gen_toks < 1:
        raise UserError(f"--max-gen-toks: must be at least 1, got {max_gen_toks}")
    for folder in include_path or []:
        if not folder.is_dir():
            raise UserError(f"--include-path {folder}: not a folder")
    check_output(output, [model_options.model, *model_options.lora, *(include_path or [])])
    model_options = model_options.validated()
    register()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(p) for p in include_path] if include_path else None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        from zhllama.core.errors import did_you_mean

        hint = did_you_mean(unknown[0], manager.all_tasks)
        raise UserError(f"--tasks: unknown task '{unknown[0]}'{hint} (python -m zhllama.harness ls tasks lists them)")
    from zhllama.core.engine import open_model
    from zhllama.harness.lm import ZhllamaLM

    loaded = open_model(model_options)
    try:
        lm = ZhllamaLM(loaded=loaded, max_gen_toks=max_gen_toks)
        results = simple_evaluate(
            model=lm,
            tasks=names,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=log_samples,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    finally:
        loaded.close()
    samples = results.pop("samples", None) if results else None
    from lm_eval.utils import handle_non_serializable

    with atomic_dir(output, force=force) as tmp:
        (tmp / "results.json").write_text(
            json.dumps(results, ensure_ascii=False, indent=2, default=handle_non_serializable) + "\n", encoding="utf-8"
        )
        for task, records in (samples or {}).items():
            with open(tmp / f"samples_{task}.jsonl", "w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False, default=handle_non_serializable) + "\n")
    rows = []
    for task, metrics in sorted(results["results"].items()):
        for key, value in metrics.items():
            if key == "alias" or "stderr" in key or not isinstance(value, int | float):
                continue
            rows.append((task, key.split(",")[0], round(float(value), 4)))
    summary = {"output": str(output), "results": results["results"], "tasks": names}
    console.emit(summary, console.table(f"lm-eval on {model_options.model}", ["task", "metric", "value"], rows))


def register(app: typer.Typer) -> None:
    app.command(
        "harness",
        epilog=examples(
            "zhllama eval harness --model merged --tasks ceval-valid --num-fewshot 5 --output results/harness",
            "zhllama eval harness --model model-q4_0.gguf --tasks zh-ceval-valid --include-path tasks/ -o out",
            "python -m zhllama.harness --model zhllama --model_args model=merged,lora=a;b --tasks cmmlu  # lm_eval CLI",
        ),
    )(harness)
