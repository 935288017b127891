"""GGUF types zhllama writes (cheap to import: the CLI lists them without loading torch or gguf)."""

from __future__ import annotations

TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")  # written by the gguf package
K_QUANTS = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")  # via llama.cpp
