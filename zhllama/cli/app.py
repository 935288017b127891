"""The `zhllama` root command: global flags, error-to-exit-code mapping, command discovery.

Every module in `zhllama/cli/commands/` defines `register(app)`, which adds its command(s);
this file knows none of them by name.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer._click import core as click_core  # Typer 0.29 vendors its own Click
from typer._click import exceptions as click_exc
from typer._click.globals import get_current_context

from zhllama import __version__
from zhllama.core import console
from zhllama.core.config import CommandDefaults, load_config
from zhllama.core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER, UserError

CONFIG_META_KEY = "zhllama.config"

app = typer.Typer(
    name="zhllama",
    help="Carry a LLaMA-family model to Chinese, end to end: vocab, pretrain, sft, merge, quantize, eval, chat.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zhllama {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout (logs go to stderr).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML file of option values; flags override it.", metavar="FILE.yaml"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    console.SETTINGS.json = json_output
    console.SETTINGS.quiet = quiet
    console.SETTINGS.debug = debug
    _quiet_libraries(debug)
    if config is not None:
        values = load_config(config)
        ctx.default_map = CommandDefaults(values, _command_names(ctx.command))
        ctx.meta[CONFIG_META_KEY] = (config, values)


def _quiet_libraries(debug: bool) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        for name in ("transformers", "datasets", "peft", "accelerate", "bitsandbytes", "torch"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if not debug or not console.progress_enabled():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _command_names(group: click_core.Command) -> set[str]:
    names: set[str] = set()
    for name, sub in getattr(group, "commands", {}).items():
        names.add(name)
        names |= _command_names(sub)
    return names


def _check_config_keys(command: click_core.Command, callback):
    """Wrap a leaf command so a config key it does not know is a user error naming the file."""

    def checked(*args, **kwargs):
        ctx = get_current_context()
        loaded = ctx.find_root().meta.get(CONFIG_META_KEY)
        if loaded is not None:
            path, values = loaded
            known = {p.name for p in command.params}
            unknown = sorted(set(values) - known)
            if unknown:
                raise UserError(
                    f"{path}: unknown option '{unknown[0].replace('_', '-')}' for 'zhllama {ctx.command_path.split(' ', 1)[-1]}'"
                )
        return callback(*args, **kwargs)

    return checked


def _register_commands() -> None:
    import zhllama.cli.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


def build_cli() -> click_core.Command:
    """The Click command tree, with config-key checking on every leaf command."""
    if not getattr(build_cli, "_registered", False):
        _register_commands()
        build_cli._registered = True  # type: ignore[attr-defined]
    cli = typer.main.get_command(app)

    def wrap(cmd: click_core.Command) -> None:
        if isinstance(getattr(cmd, "commands", None), dict):
            for sub in cmd.commands.values():
                wrap(sub)
        elif cmd.callback is not None:
            cmd.callback = _check_config_keys(cmd, cmd.callback)

    wrap(cli)
    return cli


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this; `main` exits with it)."""
    console.SETTINGS.debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli = build_cli()
        result = cli.main(args=argv, prog_name="zhllama", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except click_exc.ClickException as exc:
        exc.show()
        return EXIT_USER if isinstance(exc, click_exc.UsageError) else exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        console.stderr.print("zhllama: interrupted")
        return EXIT_INTERRUPTED
    except UserError as exc:
        if console.SETTINGS.debug:
            traceback.print_exc()
        print(f"zhllama: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:  # internal failure: one line unless --debug
        if console.SETTINGS.debug:
            traceback.print_exc()
        print(
            f"zhllama: internal error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def main() -> None:
    sys.exit(run())
