"""The model flags of every command that loads a model for inference, generated from `ModelOptions`.

    @model_options_command
    def chat(model_options: ModelOptions, prompt: ... = None) -> None:
        loaded = open_model(model_options)

adds --model --engine --device --dtype --load --lora --attn --rope-scaling --rope-factor
--context-length --gpu-layers --threads, with one spelling and one help text everywhere.
"""

from __future__ import annotations

from zhllama.cli.schema import with_options
from zhllama.core.loading.options import ModelOptions

model_options_command = with_options(ModelOptions, "model_options")

__all__ = ["ModelOptions", "model_options_command"]
