"""GPTQ through GPTQModel (auto-gptq does not work with transformers 5).

GPTQModel is an optional extra (`zhllama[gptq]`); it pins its own numpy (7.6.0: numpy 2.2.6), so
install it in its own environment (checked there: 4-bit g32 on a tiny model, reload and PPL work;
`tests/quantize/test_gptq.py` runs when gptqmodel is importable). On CPU-only machines set GPTQMODEL_CPU_WORKERS to the core count (done here).
Calibration samples shorter than 10 tokens are dropped by GPTQModel, so they are filtered first.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.plugin_api import QuantizerPlugin
from zhllama.core.schema import option

MIN_SAMPLE_TOKENS = 10


def calibration_texts(path: Path | None, samples: int, tokenizer) -> list[str]:
    if path is None:
        raise UserError("--calibration: gptq needs a calibration text file (one sample per line)")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [line for line in lines if len(tokenizer.encode(line)) >= MIN_SAMPLE_TOKENS][:samples]
    if not texts:
        raise UserError(f"{path}: no calibration line has {MIN_SAMPLE_TOKENS} or more tokens")
    return texts


@dataclass
class GPTQOptions:
    calibration: Path | None = option(None, "Calibration text, one sample per line (required).")
    bits: int = option(4, "4 or 8.")
    group_size: int = option(128, "Weights per quantization group (in-features must be divisible by it).")
    samples: int = option(128, "Number of calibration samples.")


class GPTQ(QuantizerPlugin):
    name = "gptq"
    description = "GPTQ 4/8-bit through GPTQModel"
    requires = ("gptqmodel",)
    install_hint = "pip install 'zhllama[gptq]'"
    Options = GPTQOptions

    def validate(self, model: Path, options: GPTQOptions) -> None:
        if options.bits not in (4, 8):
            raise UserError(f"--bits: {options.bits} is not 4 or 8")
        if options.group_size < 1 or options.samples < 1:
            raise UserError("--group-size and --samples: must be at least 1")
        if options.calibration is None:
            raise UserError("--calibration: gptq needs a calibration text file (one sample per line)")
        if not options.calibration.is_file():
            raise UserError(f"{options.calibration}: no such file")

    def quantize(self, model: Path, output: Path, options: GPTQOptions) -> None:
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
        from zhllama.core.tokenizer import ZhTokenizer

        tok = ZhTokenizer(model)
        texts = calibration_texts(options.calibration, options.samples, tok)
        with contextlib.redirect_stdout(sys.stderr):  # GPTQModel logs on stdout; keep it for --json
            from gptqmodel import GPTQModel, QuantizeConfig

            quantized = GPTQModel.load(str(model), QuantizeConfig(bits=options.bits, group_size=options.group_size))
            quantized.quantize(texts)
            quantized.save(str(output))
        tok.save(output)
