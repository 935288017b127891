"""What the eval commands share: opening a model, the inputs an output must stay clear of.

The model identity results are cached under is `ModelOptions.identity()` (core/loading/options.py)."""

from __future__ import annotations

from pathlib import Path

from zhllama.core.loading.options import ModelOptions


def local_inputs(options: ModelOptions, *paths: Path) -> list[Path]:
    """The input paths an --output must stay clear of (the model and adapters when local)."""
    found = [Path(p) for p in paths]
    for candidate in (options.model, *options.lora):
        if Path(candidate).exists():
            found.append(Path(candidate))
    return found


def open_for_eval(options: ModelOptions):
    from zhllama.core.engine import open_model

    return open_model(options)
