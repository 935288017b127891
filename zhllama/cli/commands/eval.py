"""`zhllama eval ceval|cmmlu|longbench|ppl`; benchmarks are also top-level commands (`zhllama ceval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import examples
from zhllama.cli.ppl import ppl
from zhllama.core import console, registry

app = typer.Typer(help="Evaluate a model: C-Eval, CMMLU, LongBench, perplexity.", no_args_is_help=True)
app.command(
    "ppl",
    epilog=examples(
        "zhllama eval ppl --model merged --data zh_wiki.txt --context 4096 --stride 2048",
        "zhllama eval ppl --model model-q4_0.gguf --data zh_wiki.txt --context 512",
    ),
)(ppl)

DEFAULT_SPLIT = {"ceval": "val", "cmmlu": "test"}


def open_for_eval(model: Path, engine: str | None, lora: list[Path] | None, load: str | None):
    from zhllama.core.engine import LoadOptions, open_model

    return open_model(model, engine, LoadOptions(lora=[str(p) for p in lora or []], load=load))


def make_exam_command(name: str):
    """One command per multiple-choice benchmark plugin; flags declared once here."""

    def command(
        model: Annotated[Path, typer.Option("--model", "-m", help="HF model folder or .gguf file.")],
        data_dir: Annotated[Path, typer.Option("--data-dir", help="Benchmark folder in the official layout.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Results folder (resumable).")],
        split: Annotated[str, typer.Option("--split", help="val / test / dev.")] = DEFAULT_SPLIT.get(name, "test"),
        shots: Annotated[int, typer.Option("--shots", help="Few-shot examples from dev (0-5), in file order.")] = 0,
        template: Annotated[str | None, typer.Option("--template", help="Wrap prompts in an sft template.")] = None,
        prompt_style: Annotated[
            str, typer.Option("--prompt-style", help="default, cla2 (reference evaluator) or official (cmmlu).")
        ] = "default",
        mode: Annotated[str, typer.Option("--mode", help="logits (one forward pass) or generate.")] = "logits",
        batch_size: Annotated[str, typer.Option("--batch-size", help="Questions per forward pass, or auto.")] = "auto",
        subjects: Annotated[str | None, typer.Option("--subjects", help="Comma-separated subject keys.")] = None,
        limit: Annotated[int | None, typer.Option("--limit", help="At most N questions per subject.")] = None,
        seed: Annotated[int, typer.Option("--seed")] = 42,
        max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="generate mode: answer length.")] = 32,
        lora: Annotated[list[Path] | None, typer.Option("--lora", help="LoRA adapter(s) on top of --model.")] = None,
        load: Annotated[str | None, typer.Option("--load", help="4bit or 8bit (bitsandbytes).")] = None,
        engine: Annotated[
            str | None, typer.Option("--engine", help="transformers, llamacpp or vllm (default: by file).")
        ] = None,
        plot: Annotated[bool, typer.Option("--plot", help="Also write a bar chart per category.")] = False,
    ) -> None:
        from zhllama.core.evaluation.runner import McqSettings, run_mcq

        benchmark = registry.load("benchmarks", name)()
        settings = McqSettings(
            split, shots, template, prompt_style, mode, batch_size, subjects, limit, seed, max_new_tokens
        )
        loaded = open_for_eval(model, engine, lora, load)
        try:
            summary = run_mcq(
                benchmark,
                loaded,
                data_dir,
                output,
                settings,
                model_id=f"{model}|{','.join(map(str, lora or []))}|{load}",
                plot=plot,
            )
        finally:
            loaded.close()
        rows = [(c, v["correct"], v["total"], round(v["accuracy"], 2)) for c, v in summary["categories"].items()]
        overall = summary["overall"]
        rows.append(("overall", overall["correct"], overall["total"], round(overall["accuracy"], 2)))
        console.emit(
            summary,
            console.table(
                f"{name} {split} ({shots}-shot, {mode})", ["category", "correct", "total", "accuracy %"], rows
            ),
        )

    command.__doc__ = f"{registry.load('benchmarks', name, check_requirements=False).description}; writes summary.json and predictions.jsonl."
    return command


EXAMPLES = {
    "ceval": (
        "zhllama eval ceval --model merged --data-dir ceval-exam --output results/ceval --shots 5",
        "zhllama ceval --model merged --data-dir ceval-exam --split test --output results/ceval-test",
    ),
    "cmmlu": ("zhllama eval cmmlu --model merged --data-dir cmmlu --output results/cmmlu --prompt-style official",),
}


def register(root: typer.Typer) -> None:
    for name in registry.names("benchmarks"):
        plugin = registry.load("benchmarks", name, check_requirements=False)
        if getattr(plugin, "kind", "") == "mcq":
            command = make_exam_command(name)
        elif getattr(plugin, "kind", "") == "longbench":
            from zhllama.cli.longbench import longbench_command as command
        else:
            continue
        epilog = examples(*EXAMPLES.get(name, (f"zhllama eval {name} --help",)))
        app.command(name, epilog=epilog)(command)
        root.command(name, epilog=epilog, help=f"Same as `zhllama eval {name}`.")(command)
    root.add_typer(app, name="eval")
