"""`zhllama eval ceval|cmmlu|longbench|ppl` (benchmarks are also top-level: `zhllama ceval`)."""

from __future__ import annotations

import typer

from zhllama.cli.options import examples
from zhllama.cli.ppl import ppl

app = typer.Typer(help="Evaluate a model: C-Eval, CMMLU, LongBench, perplexity.", no_args_is_help=True)
app.command(
    "ppl",
    epilog=examples(
        "zhllama eval ppl --model merged --data zh_wiki.txt --context 4096 --stride 2048",
        "zhllama eval ppl --model model-q4_0.gguf --data zh_wiki.txt --context 512",
    ),
)(ppl)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")
