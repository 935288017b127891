"""zhllama: carry a LLaMA-family model to a new language (Chinese first), end to end."""

__version__ = "0.1.0"
