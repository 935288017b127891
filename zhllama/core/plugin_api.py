"""The plugin API: one base class per kind, options declared as dataclasses, one loader (`registry`).

| kind        | entry-point group     | base class            | what a plugin provides                        |
|-------------|-----------------------|-----------------------|-----------------------------------------------|
| templates   | `zhllama.templates`   | `TemplatePlugin` (subclass `core.templates.Template`, which adds the shared helpers) | `segments(messages, system, add_generation_prompt)` |
| quantizers  | `zhllama.quantizers`  | `QuantizerPlugin`     | `Options` dataclass + `quantize(model, output, options)` |
| engines     | `zhllama.engines`     | `EnginePlugin`        | `accepts(path)`, `priority`, `resolves_sources`, `load(path, ModelOptions) -> LoadedModel` |
| benchmarks  | `zhllama.benchmarks`  | `BenchmarkPlugin`     | `settings_class` + `check/prepare/run/table` (the generic eval command), or `typer_command()` |

Every plugin class carries `name`, `description`, `requires` (importable module names, checked
without importing them) and `install_hint`. Loading a plugin module must stay cheap: heavy imports
(torch, transformers, llama_cpp, ...) belong inside methods, so `zhllama --help` starts without them.

A quantizer's `Options` is a dataclass whose fields use `zhllama.core.schema.option(default, help)`;
`zhllama quantize NAME` gets exactly those flags, so another method's flags are usage errors.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from zhllama.core.engine import LoadedModel
    from zhllama.core.loading.options import ModelOptions


class Plugin:
    """What every plugin declares (shown by `zhllama plugins`)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""


@dataclasses.dataclass
class NoOptions:
    """The options of a plugin that has none."""


class TemplatePlugin(Plugin, ABC):
    """A chat template. Subclass `zhllama.core.templates.Template`, which adds the helpers every
    template shares (turn splitting, stop handling); this base only names what the registry checks."""

    default_system: ClassVar[str | None] = None
    stop_strings: ClassVar[tuple[str, ...]] = ()
    stop_tokens: ClassVar[tuple[str, ...]] = ()  # special tokens that end an answer (besides the tokenizer's EOS)

    @abstractmethod
    def segments(self, messages, system: str | None = None, add_generation_prompt: bool = False):
        """The conversation as `core.templates.Segment`s (text, special tokens, template markup)."""


class QuantizerPlugin(Plugin, ABC):
    """Writes a quantized copy of an HF model folder (a folder, or one file when `output_is_file`)."""

    Options: ClassVar[type] = NoOptions
    output_is_file: ClassVar[bool] = False

    def settings(self, options: Any) -> dict:
        """What the report records about this run (default: every option)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(options).items()}

    def validate(self, model: Path, options: Any) -> None:  # noqa: B027 - optional hook
        """Check options against the model before anything is written (raise `UserError`)."""

    @abstractmethod
    def quantize(self, model: Path, output: Path, options: Any) -> None:
        """Write the quantized model into `output` (a temporary sibling the CLI renames into place)."""


class EnginePlugin(Plugin, ABC):
    """Loads a model for inference (chat, serve, predict, eval).

    Without `--engine`, `core.engine.choose_engine` asks every registered engine (built-ins and
    third-party alike) whether it `accepts` the model path, highest `priority` first (ties by name),
    and takes the first that does. Built-ins: llamacpp 20 (`.gguf` files), transformers 10 (HF
    folders), vllm 0 (the same folders as transformers, so only with `--engine vllm`). An engine that
    opens what no built-in opens needs no priority; one that should win over a built-in for the same
    paths declares a higher one.

    `resolves_sources`: the engine reads local HF folders / `.gguf` files, so other sources (hub ids,
    Meta and TencentPretrain folders) are turned into one by `checkpoint.sources.resolve_model` first,
    and the folders it accepts are validated before loading. An engine that reads sources of its own
    leaves it False and gets the path as given (it must exist).
    """

    priority: ClassVar[int] = 0
    resolves_sources: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def accepts(cls, path: Path) -> bool:
        """Whether this engine reads `path` (automatic engine choice asks every engine, by `priority`)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, options: ModelOptions) -> LoadedModel:
        """A ready model; options that cannot apply to this engine are refused with a `UserError`."""


class BenchmarkPlugin(Plugin):
    """An evaluation with a command: `zhllama eval NAME` and the alias `zhllama NAME`.

    Either declare `settings_class` (a dataclass of `core.schema.option` fields) and the steps
    `check(settings, data_dir) -> checked`, `prepare(data_dir, checked)`,
    `run(model, data_dir, output, checked, prepared, model_id) -> summary` and
    `table(summary, checked)`: the eval command builder (`cli/commands/eval/builder.py`) then gives it
    the model flags, its settings' flags, `--data-dir` and `--output` and runs the steps in that
    order, each once. Or leave `settings_class` unset and override `typer_command()` to bring a
    command of your own.
    """

    settings_class: ClassVar[type | None] = None
    examples: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def typer_command(cls) -> Callable[..., None]:
        """The Typer command function of a plugin without `settings_class` (flags, help, `examples`)."""
        raise TypeError(f"benchmark plugin '{cls.name}' declares neither settings_class nor typer_command()")


def base_class(kind: str) -> type:
    """The base class plugins of `kind` must subclass."""
    return {
        "templates": TemplatePlugin,
        "quantizers": QuantizerPlugin,
        "engines": EnginePlugin,
        "benchmarks": BenchmarkPlugin,
    }[kind]
