"""The one eval command: `zhllama eval NAME` built from what a benchmark plugin declares.

A plugin with a `settings_class` (a dataclass of `core.schema.option` fields) gets the model flags,
those settings' flags, `--data-dir` and `--output`, and this order of work, each step once:
plugin extras present -> model flags -> `plugin.check(settings, data_dir)` (the options, into a
checked settings object) -> the output folder -> `plugin.prepare(data_dir, settings)` (every data
file, before the model loads) -> the model -> `plugin.run(...)` -> `plugin.table(summary, settings)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.commands.eval.common import local_inputs, open_for_eval
from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.schema import with_options
from zhllama.core import console, registry
from zhllama.core.errors import MissingDependencyError
from zhllama.core.evaluation.results import check_output_folder


def require(plugin) -> None:
    """The plugin's extras are installed, or a `MissingDependencyError` with its install hint."""
    missing = registry.missing_modules(tuple(getattr(plugin, "requires", ())))
    if missing:
        hint = getattr(plugin, "install_hint", "") or f"pip install {' '.join(missing)}"
        raise MissingDependencyError(
            f"benchmarks plugin '{plugin.name}' needs {', '.join(missing)}, which is not installed; "
            f"install it with: {hint}"
        )


def build_command(plugin):
    """The Typer command of a benchmark plugin class that declares `settings_class`."""

    def command(
        model_options: ModelOptions,
        settings,
        data_dir: Path,
        output: Annotated[Path, typer.Option("--output", "-o", help="Results folder (resumable).")],
    ) -> None:
        require(plugin)
        benchmark = plugin()
        model_options = model_options.validated()
        settings = benchmark.check(settings, data_dir)
        check_output_folder(output, local_inputs(model_options, data_dir))
        prepared = benchmark.prepare(data_dir, settings)
        loaded = open_for_eval(model_options)
        try:
            summary = benchmark.run(loaded, data_dir, output, settings, prepared, model_options.identity())
        finally:
            loaded.close()
        console.emit(summary, benchmark.table(summary, settings))

    # the plugin's own help for --data-dir (set as an object: annotations are evaluated in module scope)
    data_help = getattr(plugin, "data_dir_help", "") or "Benchmark folder in the official layout."
    command.__annotations__["data_dir"] = Annotated[Path, typer.Option("--data-dir", help=data_help)]
    command = model_options_command(with_options(plugin.settings_class, "settings")(command))
    command.__name__ = plugin.name.replace("-", "_")
    command.__doc__ = f"{plugin.description}; writes summary.json and predictions.jsonl."
    command.examples = tuple(getattr(plugin, "examples", ()) or ())
    return command
