"""Flags of `zhllama pretrain` / `zhllama sft` (and the alignment commands), generated from one schema.

API for commands built on the training runner:

- `build_command(task, config_cls, doc)`: a Typer command function whose flags are generated from
  the dataclass `config_cls` (`TrainConfig` or a subclass such as `PretrainConfig`, `SftConfig`, or an
  alignment config): one flag per field, help text from the field's metadata, defaults from the
  dataclass (declared nowhere else). The command builds `config_cls(...)` from the flags (a YAML
  `--config` fills the same flags, so it is validated by the same types) and calls `task(cfg)`,
  which returns the run summary dict; rank 0 prints it (`--json` or a table).
- `build_command(task, own, doc)` with a list of `option(...)` parameters is the older form: the
  flags are TrainConfig's plus `own`, whose values go to `TrainConfig.extra`.

Example (an alignment command):

    @dataclass
    class DpoConfig(TrainConfig):
        beta: float = option(0.1, "DPO beta.")

    command = build_command(dpo, DpoConfig, "Direct preference optimisation.")
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from zhllama.core import console
from zhllama.core.schema import from_values
from zhllama.core.training.config import TrainConfig


def option(name: str, annotation: Any, default: Any, *flags: str, help: str) -> inspect.Parameter:
    """A hand-declared parameter for the older `build_command(task, own, doc)` form."""
    flags = flags or (f"--{name.replace('_', '-')}",)
    kwargs = {"help": help}
    if default is ...:
        kwargs["show_default"] = False
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*flags, **kwargs)],
    )


def report(summary: dict, output) -> None:
    """Print a run summary (rank 0 only under torchrun / accelerate)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    rows = [
        ("steps", summary["steps"]),
        ("tokens", summary["tokens"]),
        ("first loss", summary["first_loss"] if summary["first_loss"] is not None else "-"),
        ("final loss", summary["final_loss"]),
        ("tokens/s", round(summary["tokens_per_second"], 1)),
    ]
    if "eval_perplexity" in summary:
        rows.append(("eval perplexity", summary["eval_perplexity"]))
    rows.append(("output", str(output)))
    console.emit(summary, console.table(f"{summary['kind']} done", ["", "value"], rows))


def build_command(
    task: Callable[[TrainConfig], dict], config: type[TrainConfig] | list[inspect.Parameter], doc: str
) -> Callable:
    """A Typer command function whose flags come from `config` (see the module docstring)."""
    from zhllama.cli.schema import parameters

    if isinstance(config, type):
        cls, own = config, []
    else:
        cls, own = TrainConfig, list(config)
    own_names = [p.name for p in own]

    def command(**kwargs: Any) -> None:
        extra = {name: kwargs.pop(name) for name in own_names}
        cfg = from_values(cls, kwargs)
        if extra:
            cfg.extra = extra
        report(task(cfg), kwargs["output"])

    params = parameters(cls) + own
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command
