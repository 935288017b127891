"""GGUF types zhllama writes (cheap to import: the CLI lists them without loading torch or gguf)."""

from __future__ import annotations

TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")  # written by the gguf package
K_QUANTS = ("Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")  # llama.cpp
IQ_QUANTS = (  # llama.cpp's i-quants (some need an importance matrix: core/quantize/imatrix.NEEDS_IMATRIX)
    "IQ1_S",
    "IQ1_M",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ2_M",
    "IQ3_XXS",
    "IQ3_XS",
    "IQ3_S",
    "IQ3_M",
    "IQ4_NL",
    "IQ4_XS",
)
LLAMA_CPP_TYPES = K_QUANTS + IQ_QUANTS  # quantized by llama.cpp itself (binding, or llama-quantize with an imatrix)
ALL_TYPES = TYPES + LLAMA_CPP_TYPES
