"""Continued pre-training and instruction tuning on HF Trainer + PEFT (`zhllama pretrain` / `sft`)."""

from zhllama.core.training.runner import TrainConfig
from zhllama.core.training.tasks import pretrain, sft

__all__ = ["TrainConfig", "pretrain", "sft"]
