"""Continued pre-training and instruction tuning on HF Trainer + PEFT (`zhllama pretrain` / `sft`).

Names are imported lazily: the CLI reads the config classes without importing torch.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "TrainConfig": "config",
    "PretrainConfig": "config",
    "SftConfig": "config",
    "pretrain": "tasks",
    "sft": "tasks",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
