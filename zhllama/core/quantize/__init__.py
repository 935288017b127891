"""Quantization: shared reporting plus the GGUF writer; methods are plugins in `zhllama.quantizers`."""
