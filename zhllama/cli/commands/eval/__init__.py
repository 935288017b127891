"""`zhllama eval BENCHMARK|ppl`: one module per command; every benchmark plugin brings its own command.

A benchmark plugin (entry-point group `zhllama.benchmarks`) provides its Typer command through the
classmethod `typer_command()`; each is registered as `zhllama eval NAME` and as the top-level alias
`zhllama NAME`. Nothing here imports torch: command modules import the heavy parts when they run.
"""

from __future__ import annotations

import typer

from zhllama.cli.commands.eval import ppl
from zhllama.core import registry
from zhllama.core.errors import UserError

app = typer.Typer(help="Evaluate a model: C-Eval, CMMLU, LongBench, perplexity.", no_args_is_help=True)
ppl.register(app)


def missing_command(name: str):
    """The command of a benchmark plugin that provides none: says so instead of vanishing."""

    def command() -> None:
        raise UserError(f"benchmark plugin '{name}' provides no command (it must define typer_command())")

    command.__doc__ = f"Benchmark plugin '{name}' (provides no command)."
    return command


def benchmark_command(name: str):
    """(command function, examples) of one benchmark plugin."""
    plugin = registry.load("benchmarks", name, check_requirements=False)
    maker = getattr(plugin, "typer_command", None)
    command = maker() if callable(maker) else missing_command(name)
    return command, tuple(getattr(command, "examples", ()) or (f"zhllama eval {name} --help",))


def register(root: typer.Typer) -> None:
    from zhllama.cli.options import examples

    for name in registry.names("benchmarks"):
        command, lines = benchmark_command(name)
        epilog = examples(*lines)
        app.command(name, epilog=epilog)(command)
        root.command(name, epilog=epilog, help=f"Same as `zhllama eval {name}`.")(command)
    root.add_typer(app, name="eval")
