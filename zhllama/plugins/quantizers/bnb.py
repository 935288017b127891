"""bitsandbytes 4-bit (NF4/FP4, double quant) and 8-bit: transformers-loadable quantized checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.loading.options import parse_dtype
from zhllama.core.plugin_api import QuantizerPlugin
from zhllama.core.schema import option


def _save_quantized(model_dir: Path, output: Path, load: str, compute_dtype: str = "float32", **settings) -> None:
    """Load `model_dir` quantized on the GPU when present (else CPU, CPU-safe layers) and save it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from zhllama.core.loading.quantization import quantization_for
    from zhllama.core.tokenizer import ZhTokenizer

    on_gpu = torch.cuda.is_available()
    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    quantization_config = quantization_for(load, config, on_gpu, compute_dtype, **settings)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        quantization_config=quantization_config,
        device_map={"": 0} if on_gpu else {"": "cpu"},
        trust_remote_code=False,
    )
    model.save_pretrained(str(output), safe_serialization=True)
    ZhTokenizer(model_dir).save(output)


@dataclass
class FourBitOptions:
    quant_type: str = option("nf4", "nf4 or fp4.")
    compute_dtype: str = option("fp32", "Compute dtype of the dequantized matmuls: fp32, bf16 or fp16.")
    double_quant: bool = option(True, "Quantize the scales too.", "--double-quant/--no-double-quant")


class FourBit(QuantizerPlugin):
    name = "4bit"
    description = "bitsandbytes 4-bit (NF4 with double quant by default, or FP4)"
    requires = ("bitsandbytes",)
    install_hint = "pip install 'zhllama[bnb]'"
    Options = FourBitOptions

    def validate(self, model: Path, options: FourBitOptions) -> None:
        if options.quant_type not in ("nf4", "fp4"):
            raise UserError(f"--quant-type: '{options.quant_type}' is not nf4 or fp4")
        parse_dtype(options.compute_dtype, "--compute-dtype")

    def quantize(self, model: Path, output: Path, options: FourBitOptions) -> None:
        compute_dtype = parse_dtype(options.compute_dtype, "--compute-dtype") or "float32"
        _save_quantized(
            model,
            output,
            "4bit",
            compute_dtype,
            quant_type=options.quant_type,
            double_quant=options.double_quant,
        )


class EightBit(QuantizerPlugin):
    name = "8bit"
    description = "bitsandbytes LLM.int8()"
    requires = ("bitsandbytes",)
    install_hint = "pip install 'zhllama[bnb]'"

    def quantize(self, model: Path, output: Path, options) -> None:
        _save_quantized(model, output, "8bit")
