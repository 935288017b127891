"""The `zhllama` root command: global flags, error-to-exit-code mapping, command discovery.

Every module in `zhllama/cli/commands/` defines `register(app)`, which adds its command(s);
this file knows none of them by name.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer._click import core as click_core  # Typer 0.29 vendors its own Click
from typer._click import exceptions as click_exc
from typer._click.globals import get_current_context

from zhllama import __version__
from zhllama.core import atomic, console
from zhllama.core.config import CommandDefaults, load_config
from zhllama.core.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USER,
    Interrupted,
    UserError,
    classify,
    one_line,
)

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
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not Path("/proc/driver/nvidia").exists():
        # DeepSpeed (imported by transformers' save_pretrained when installed) announces "Setting
        # accelerator to CPU" on stdout when it has to guess, which would corrupt --json output;
        # naming the accelerator makes that an unprinted info line. GPU machines keep detection.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        # kernels: bitsandbytes' CPU backend asks it for a hub kernel at import on AVX512-BF16 CPUs,
        # and it warns (e.g. "Skipping publisher trust check ... offline mode") on stderr
        for name in ("transformers", "datasets", "peft", "accelerate", "bitsandbytes", "kernels", "torch"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if not debug or not console.progress_enabled():
        # transformers' own progress bars follow huggingface_hub's switch, read when they are
        # imported (the CLI must not import them just to build); in-process callers may have
        # imported them already, so switch them off directly there
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
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


def _install_signal_handlers() -> dict[int, object]:
    """SIGTERM raises `Interrupted` (SIGINT keeps raising KeyboardInterrupt), so atomic outputs
    clean up the same way for both.

    A second SIGTERM while cleaning up exits at once (stale temporary siblings are removed by
    the next run writing there). Returns the previous handlers (restored after the command).
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_term(signum, frame):
        if on_term.fired:  # type: ignore[attr-defined]
            os._exit(128 + signum)
        on_term.fired = True  # type: ignore[attr-defined]
        raise Interrupted(signum)

    on_term.fired = False  # type: ignore[attr-defined]
    previous = {}
    for sig, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, on_term)):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    return previous


def _restore_signal_handlers(previous: dict[int, object]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def _click_error_line(exc: click_exc.ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if isinstance(exc, click_exc.UsageError) and ctx is not None else ""
    return f"zhllama: error: {one_line(exc.format_message())}{hint}"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this; `main` exits with it).

    Every failure ends as exactly one stderr line (the traceback too with `--debug`): usage
    errors and `UserError` exit 2, storage failures 1, SIGINT/SIGTERM 130/143 (see
    `zhllama.core.errors.classify`).
    """
    console.SETTINGS.debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    console.begin_command()
    atomic.begin_run()
    previous = _install_signal_handlers()
    code, line = EXIT_INTERNAL, None
    try:
        try:
            cli = build_cli()
            result = cli.main(args=argv, prog_name="zhllama", standalone_mode=False)
            code = result if isinstance(result, int) else 0
            if code == EXIT_INTERRUPTED:  # Typer turns KeyboardInterrupt into Exit(130)
                code, line = classify(KeyboardInterrupt())
        except typer.Exit as exc:
            code = exc.exit_code
        except typer.Abort:
            code, line = classify(KeyboardInterrupt())
        except click_exc.NoArgsIsHelpError:  # `zhllama vocab`: the help was printed; nothing went wrong
            code = 0
        except click_exc.ClickException as exc:
            code = EXIT_USER if isinstance(exc, click_exc.UsageError) else exc.exit_code
            line = _click_error_line(exc)
        except (Exception, KeyboardInterrupt, Interrupted) as exc:  # every failure: one line, one exit code
            code, line = classify(exc)
            if console.SETTINGS.debug:
                traceback.print_exc()
    finally:  # also when SystemExit passes through
        atomic.end_run(failed=code != 0 or line is not None)  # folders it made and left empty go
        _restore_signal_handlers(previous)
        console.end_command(code == 0 and line is None)
        if line is not None:
            print(line, file=sys.stderr)
        sys.stderr.flush()
    return code


def main() -> None:
    sys.exit(run())
