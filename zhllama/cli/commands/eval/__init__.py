"""`zhllama eval BENCHMARK|ppl`: every benchmark plugin gets its command here.

A benchmark plugin (entry-point group `zhllama.benchmarks`) that declares a `settings_class` gets
the generic eval command (`builder.build_command`: its settings' flags, the model flags,
`--data-dir`, `--output`); one that does not provides its own Typer command through the classmethod
`typer_command()`. Each is registered as `zhllama eval NAME` and as the top-level alias `zhllama NAME`.
Nothing here imports torch: commands import the heavy parts when they run.
"""

from __future__ import annotations

import typer

from zhllama.cli.commands.eval import harness, ppl
from zhllama.core import registry
from zhllama.core.errors import UserError

app = typer.Typer(help="Evaluate a model: C-Eval, CMMLU, LongBench, perplexity.", no_args_is_help=True)
ppl.register(app)
harness.register(app)  # lm-evaluation-harness tasks (engines: zhllama/harness)


def broken_command(name: str, problem: str):
    """The command of a benchmark plugin that cannot provide one: says why instead of vanishing."""

    def command() -> None:
        raise UserError(problem)

    command.__doc__ = f"Benchmark plugin '{name}' (unusable: see `zhllama plugins`)."
    return command


def benchmark_command(name: str):
    """(command function, examples) of one benchmark plugin; a broken plugin never breaks the CLI."""
    try:
        plugin = registry.load("benchmarks", name, check_requirements=False)
        if getattr(plugin, "settings_class", None) is not None:
            from zhllama.cli.commands.eval.builder import build_command

            command = build_command(plugin)
        else:
            command = plugin.typer_command()
    except UserError as exc:
        command = broken_command(name, str(exc))
    except Exception as exc:  # third-party code: report it when the command is used, keep the CLI working
        command = broken_command(name, f"benchmark plugin '{name}' has no usable command ({type(exc).__name__}: {exc})")
    return command, tuple(getattr(command, "examples", ()) or (f"zhllama eval {name} --help",))


def register(root: typer.Typer) -> None:
    from zhllama.cli.options import examples

    for name in registry.names("benchmarks"):
        command, lines = benchmark_command(name)
        epilog = examples(*lines)
        app.command(name, epilog=epilog)(command)
        root.command(name, epilog=epilog, help=f"Same as `zhllama eval {name}`.")(command)
    root.add_typer(app, name="eval")
