"""`zhllama demo`: the whole pipeline on data shipped in the package, as the commands a user types.

Each stage runs a real `zhllama` command line in-process (so the demo exercises exactly the
code paths users get), its own output goes to `WORKDIR/logs/<stage>.log`, and the demo reports
each stage's artifact, size and time.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zhllama.core import console
from zhllama.core.assets import data_path
from zhllama.core.errors import UserError


@dataclass(frozen=True)
class Stage:
    name: str
    artifact: str  # relative to the workdir
    argv: Callable[[Path], list[str]]
    capture_json: bool = False  # run with --json and keep stdout as the artifact file


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


def stages(steps: int) -> list[Stage]:
    """The demo chain; `steps` sets the number of training steps of pretrain and sft."""
    return [
        Stage(
            "base tokenizer",
            "base_sp.model",
            lambda w: [
                "vocab",
                "train",
                "--input",
                str(data_path("corpus_en.txt")),
                "--vocab-size",
                "400",
                "--byte-fallback",
                "--output",
                str(w / "base_sp.model"),
            ],
        ),
        Stage(
            "vocab train",
            "chinese_sp.model",
            lambda w: [
                "vocab",
                "train",
                "--input",
                str(data_path("corpus_zh.txt")),
                "--vocab-size",
                "1200",
                "--output",
                str(w / "chinese_sp.model"),
            ],
        ),
        Stage(
            "vocab merge",
            "merged_tokenizer",
            lambda w: [
                "vocab",
                "merge",
                "--base",
                str(w / "base_sp.model"),
                "--add",
                str(w / "chinese_sp.model"),
                "--output",
                str(w / "merged_tokenizer"),
            ],
        ),
        Stage(
            "vocab stats",
            "vocab_stats.json",
            lambda w: [
                "vocab",
                "stats",
                "--tokenizer",
                str(w / "base_sp.model"),
                "--tokenizer",
                str(w / "merged_tokenizer"),
                "--text",
                str(data_path("corpus_zh.txt")),
            ],
            capture_json=True,
        ),
        Stage(
            "tiny base model",
            "base_model",
            lambda w: ["tiny-model", "--tokenizer", str(w / "base_sp.model"), "--output", str(w / "base_model")],
        ),
    ]


def run_demo(workdir: Path, steps: int = 30, runner: Callable[[list[str]], int] | None = None) -> list[StageResult]:
    """Run every stage in order; stop at the first failing stage with an error naming it and its log."""
    if runner is None:
        from zhllama.cli.app import run as runner
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    results: list[StageResult] = []
    saved = (console.SETTINGS.json, console.SETTINGS.quiet, console.SETTINGS.debug)
    for stage in stages(steps):
        flags = ["--quiet", "--json"] if stage.capture_json else ["--quiet"]
        command = "zhllama " + " ".join([*flags[1:], *stage.argv(workdir)])
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
