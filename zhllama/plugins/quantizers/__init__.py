"""Built-in quantization methods (entry points in `zhllama.quantizers`)."""
