"""`zhllama demo`: the whole pipeline on data shipped in the package, as the commands a user types.

Each stage runs a real `zhllama` command line in-process (so the demo exercises exactly the
code paths users get), its own output goes to `WORKDIR/logs/<stage>.log`, and the demo reports
each stage's artifact, size and time. This is what `make demo` runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, examples
from zhllama.core import console
from zhllama.core.assets import data_path
from zhllama.core.atomic import check_output_dir
from zhllama.core.errors import UserError


@dataclass(frozen=True)
class Stage:
    name: str
    artifact: str  # relative to the workdir
    command: str  # a zhllama command line; {w} is the workdir, {data} the shipped data folder
    capture_json: bool = False  # run with --json and keep stdout as the artifact file

    def argv(self, workdir: Path) -> list[str]:
        paths = {"w": shlex.quote(str(workdir)), "data": shlex.quote(str(data_path()))}
        return shlex.split(self.command.format(**paths))


@dataclass
class StageResult:
    stage: str
    command: str
    artifact: str
    bytes: int
    seconds: float


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


ALIGN_FLAGS = "--lora-rank 8 --lora-alpha 16 --learning-rate 1e-3 --logging-steps 5"
TRAIN_FLAGS = ALIGN_FLAGS + " --cache-dir {w}/cache"  # pretrain/sft tokenize through the Arrow cache


def stages(steps: int, sft_steps: int) -> list[Stage]:
    """The demo chain; `steps` / `sft_steps` set the training steps of pretrain / sft.

    SFT runs long enough (300 steps by default, ~30 s) for the tiny model to memorise some of the
    shipped instructions, so the final `chat` answer is recognisable.
    """
    return [
        Stage(
            "base tokenizer",
            "base_sp.model",
            "vocab train --input {data}/corpus_en.txt --vocab-size 400 --byte-fallback --output {w}/base_sp.model",
        ),
        Stage(
            "vocab train",
            "chinese_sp.model",
            "vocab train --input {data}/corpus_zh.txt --vocab-size 1200 --output {w}/chinese_sp.model",
        ),
        Stage(
            "vocab merge",
            "merged_tokenizer",
            "vocab merge --base {w}/base_sp.model --add {w}/chinese_sp.model --output {w}/merged_tokenizer",
        ),
        Stage(
            "vocab stats",
            "vocab_stats.json",
            "vocab stats --tokenizer {w}/base_sp.model --tokenizer {w}/merged_tokenizer --text {data}/corpus_zh.txt",
            capture_json=True,
        ),
        # seed 1: with this init the 300-step SFT memorises the panda answer the final chat shows
        Stage(
            "tiny base model", "base_model", "tiny-model --tokenizer {w}/base_sp.model --seed 1 --output {w}/base_model"
        ),
        Stage(
            "pretrain",
            "pt_lora",
            "pretrain --model {w}/base_model --tokenizer {w}/merged_tokenizer --data {data}/corpus_zh.txt "
            f"--block-size 128 --max-steps {steps} {TRAIN_FLAGS} --output {{w}}/pt_lora",
        ),
        Stage(
            "sft",
            "sft_lora",
            "sft --model {w}/base_model --adapter {w}/pt_lora --data {data}/instructions.json "
            f"--max-seq-length 256 --max-steps {sft_steps} --per-device-train-batch-size 4 {TRAIN_FLAGS} "
            "--learning-rate 5e-3 --lr-scheduler-type constant --output {w}/sft_lora",
        ),
        Stage(
            "merge",
            "merged_model",
            "merge --base {w}/base_model --lora {w}/sft_lora --output {w}/merged_model --verify",
        ),
        Stage(
            "dpo",
            "dpo_lora",
            "dpo --model {w}/merged_model --data {data}/preference_pairs.jsonl --max-seq-length 256 "
            f"--max-steps 10 --per-device-train-batch-size 4 {ALIGN_FLAGS} --output {{w}}/dpo_lora",
        ),
        Stage(
            "quantize gguf",
            "model-q8_0.gguf",
            "quantize gguf --model {w}/merged_model --type Q8_0 --output {w}/model-q8_0.gguf",
        ),
        Stage(
            "eval ceval",
            "ceval/summary.json",
            "eval ceval --model {w}/merged_model --data-dir {data}/ceval --shots 1 --output {w}/ceval",
        ),
        Stage(
            "chat",
            "chat.json",
            "chat --model {w}/merged_model --greedy --max-new-tokens 48 --prompt 熊猫最喜欢吃什么？",
            capture_json=True,
        ),
    ]


def run_demo(
    workdir: Path, steps: int = 30, sft_steps: int = 300, runner: Callable[[list[str]], int] | None = None
) -> list[StageResult]:
    """Run every stage in order; stop at the first failing stage with an error naming it and its log."""
    if runner is None:
        from zhllama.cli.app import run as runner  # the real CLI, in-process
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    results: list[StageResult] = []
    saved = (console.SETTINGS.json, console.SETTINGS.quiet, console.SETTINGS.debug)
    for stage in stages(steps, sft_steps):
        flags = ["--quiet", "--json"] if stage.capture_json else ["--quiet"]
        command = "zhllama " + shlex.join([*flags[1:], *stage.argv(workdir)])
        console.log(f"[bold]{stage.name}[/bold]: {command}")
        out, err = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = runner([*flags, *stage.argv(workdir)])
        finally:
            console.SETTINGS.json, console.SETTINGS.quiet, console.SETTINGS.debug = saved
        seconds = time.perf_counter() - start
        log_file = logs / f"{stage.name.replace(' ', '_')}.log"
        log_file.write_text(f"$ {command}\n{out.getvalue()}{err.getvalue()}", encoding="utf-8")
        if code != 0:
            last = err.getvalue().strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"demo stage '{stage.name}' failed (exit {code}): {last[0]} (log: {log_file})")
        artifact = workdir / stage.artifact
        if stage.capture_json:
            artifact.write_text(out.getvalue(), encoding="utf-8")
        results.append(StageResult(stage.name, command, str(artifact), _size(artifact), seconds))
    return results


def demo(
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Keep every artifact here (default: a temporary folder, removed).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Training steps for pretrain.")] = 30,
    sft_steps: Annotated[int, typer.Option("--sft-steps", help="Training steps for sft.")] = 300,
    force: Force = False,
) -> None:
    """Run vocab -> tiny model -> pretrain -> sft -> merge -> dpo -> quantize -> eval -> chat on shipped data."""
    if workdir is not None:
        check_output_dir(workdir, force)
        if workdir.exists():
            shutil.rmtree(workdir)
        target = workdir
    else:
        target = Path(tempfile.mkdtemp(prefix="zhllama-demo-"))
    try:
        results = run_demo(target, steps=steps, sft_steps=sft_steps)
        chat = json.loads((target / "chat.json").read_text(encoding="utf-8"))
    finally:
        if workdir is None:
            shutil.rmtree(target, ignore_errors=True)
    total = sum(r.seconds for r in results)
    rows = [(r.stage, r.artifact if workdir else Path(r.artifact).name, r.bytes, f"{r.seconds:.1f}s") for r in results]
    rows.append(("total", "", sum(r.bytes for r in results), f"{total:.1f}s"))
    console.emit(
        {
            "workdir": str(workdir) if workdir else None,
            "seconds": total,
            "stages": [r.__dict__ for r in results],
            "chat": chat,
        },
        console.table("zhllama demo", ["stage", "artifact", "bytes", "time"], rows),
        f"chat> {chat['prompt']}\n{chat['answer']}",
    )


def register(app: typer.Typer) -> None:
    app.command(
        "demo", epilog=examples("zhllama demo", "zhllama demo --workdir demo-output --force", "zhllama --json demo")
    )(demo)
