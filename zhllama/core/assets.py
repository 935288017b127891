"""Files shipped inside the package (the demo corpus, instructions, C-Eval-format questions, configs)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def data_path(*parts: str) -> Path:
    """Path of a file under `zhllama/data/` (the package is installed editable or as a wheel)."""
    return Path(str(files("zhllama").joinpath("data", *parts)))


def config_path(name: str) -> Path:
    """Path of a shipped config under `zhllama/configs/` (e.g. the DeepSpeed ZeRO files)."""
    return Path(str(files("zhllama").joinpath("configs", name)))
