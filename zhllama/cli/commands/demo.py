"""`zhllama demo`: the whole pipeline end to end on the tiny embedded default (what `make demo` runs)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, examples
from zhllama.core import console
from zhllama.core.atomic import check_output_dir
from zhllama.core.demo import run_demo


def demo(
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Keep every artifact here (default: a temporary folder, removed).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Training steps for pretrain.")] = 30,
    sft_steps: Annotated[int, typer.Option("--sft-steps", help="Training steps for sft.")] = 300,
    force: Force = False,
) -> None:
    """Run vocab -> tiny model -> pretrain -> sft -> merge -> quantize -> eval -> chat on shipped data."""
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
