"""Turning a model source and options into a ready model: options, placement, quantization."""

from zhllama.core.loading.options import ModelOptions, parse_dtype

__all__ = ["ModelOptions", "parse_dtype"]
