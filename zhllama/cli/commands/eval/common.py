"""What the eval commands share: model identity for result caches, opening a model, output checks."""

from __future__ import annotations

from pathlib import Path

from zhllama.core.loading.options import ModelOptions


def model_id(options: ModelOptions) -> str:
    """Identifies the model and every flag that changes its outputs (results are cached under it)."""
    extra = [options.rope_scaling, options.rope_factor, options.context_length]
    return options.identity + ("|" + "|".join(map(str, extra)) if any(v is not None for v in extra) else "")


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
