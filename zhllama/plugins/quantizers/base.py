"""The contract of a quantizer plugin, and the options the CLI passes to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class QuantizeOptions:
    gguf_type: str = "Q8_0"
    quant_type: str = "nf4"
    compute_dtype: str = "float32"
    double_quant: bool = True
    bits: int = 4
    group_size: int = 128
    calibration: Path | None = None
    samples: int = 128


class Quantizer:
    """Subclasses set the plugin attributes and implement `quantize` (writing into `output`)."""

    name = ""
    description = ""
    requires: tuple[str, ...] = ()
    install_hint = ""
    output_is_file = False  # GGUF writes one file; the others write a model folder

    def settings(self, options: QuantizeOptions) -> dict:
        return {}

    def quantize(self, model: Path, output: Path, options: QuantizeOptions) -> None:
        raise NotImplementedError
