"""bitsandbytes 4-bit (NF4/FP4, double quant) and 8-bit: transformers-loadable quantized checkpoints."""

from __future__ import annotations

from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.plugins.quantizers.base import QuantizeOptions, Quantizer

DTYPES = ("float32", "bfloat16", "float16")


def _save_quantized(model_dir: Path, output: Path, quantization_config) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer

    device = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), quantization_config=quantization_config, device_map=device, trust_remote_code=False
    )
    model.save_pretrained(str(output), safe_serialization=True)
    ZhTokenizer(model_dir).save(output)


class FourBit(Quantizer):
    name = "4bit"
    description = "bitsandbytes 4-bit (NF4 with double quant by default, or FP4)"
    requires = ("bitsandbytes",)
    install_hint = "pip install 'zhllama[bnb]'"

    def settings(self, options: QuantizeOptions) -> dict:
        return {
            "quant_type": options.quant_type,
            "compute_dtype": options.compute_dtype,
            "double_quant": options.double_quant,
        }

    def quantize(self, model: Path, output: Path, options: QuantizeOptions) -> None:
        import torch
        from transformers import BitsAndBytesConfig

        if options.quant_type not in ("nf4", "fp4"):
            raise UserError(f"--quant-type: '{options.quant_type}' is not nf4 or fp4")
        if options.compute_dtype not in DTYPES:
            raise UserError(f"--compute-dtype: '{options.compute_dtype}' is not one of {', '.join(DTYPES)}")
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=options.quant_type,
            bnb_4bit_use_double_quant=options.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, options.compute_dtype),
        )
        _save_quantized(model, output, config)


class EightBit(Quantizer):
    name = "8bit"
    description = "bitsandbytes LLM.int8()"
    requires = ("bitsandbytes",)
    install_hint = "pip install 'zhllama[bnb]'"

    def quantize(self, model: Path, output: Path, options: QuantizeOptions) -> None:
        from transformers import BitsAndBytesConfig

        _save_quantized(model, output, BitsAndBytesConfig(load_in_8bit=True))
