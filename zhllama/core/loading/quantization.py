"""The one bitsandbytes configuration builder (chat, eval, serve, QLoRA training, `quantize 4bit/8bit`).

bitsandbytes' CPU 4-bit path on CPUs with AVX512-BF16 packs weights in blocks of 32 output
features (it asserts `out_features % 32 == 0` at the first forward) and reshapes the scales per
64-wide input block (`in_features % 64 == 0`). Real LLaMA sizes (4096, 11008, 5120, 13824)
qualify; odd sizes do not. On CPU, `cpu_4bit_unsupported` finds such layers so they
are kept in full precision (and reported) on every CPU alike, never a crash on some machines only.
"""

from __future__ import annotations

import re

from zhllama.core import console
from zhllama.core.errors import MissingDependencyError

CPU_4BIT_OUT_BLOCK = 32  # bitsandbytes' packed CPU layout: block_n
CPU_4BIT_IN_BLOCK = 64  # the 4-bit quantization blocksize transformers uses


def require_bitsandbytes(option: str = "--load") -> None:
    from zhllama.core.registry import missing_modules

    if missing_modules(("bitsandbytes",)):
        raise MissingDependencyError(f"{option} needs bitsandbytes; install it with: pip install 'zhllama[bnb]'")


def cpu_4bit_unsupported(config) -> list[str]:
    """Names of the linear layers (of a model built from `config`) the CPU 4-bit kernels cannot take."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return [
        name
        for name, module in skeleton.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name != "lm_head"
        and (module.out_features % CPU_4BIT_OUT_BLOCK or module.in_features % CPU_4BIT_IN_BLOCK)
    ]


def bnb_config(
    load: str,
    compute_dtype: str = "float32",
    quant_type: str = "nf4",
    double_quant: bool = False,
    skip_modules: list[str] | None = None,
):
    """`BitsAndBytesConfig` for `load` ("4bit" or "8bit"); `skip_modules` stay in full precision."""
    import torch
    from transformers import BitsAndBytesConfig

    require_bitsandbytes()
    skip = ["lm_head", *(skip_modules or [])] if skip_modules else None
    if load == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
        llm_int8_skip_modules=skip,
    )


def quantization_for(load: str | None, config, on_gpu: bool, compute_dtype: str, **settings):
    """The config for loading `config`'s model with `load`, CPU-safe; None when not quantizing."""
    if load is None:
        return None
    skip = None
    if load == "4bit" and not on_gpu:
        skip = cpu_4bit_unsupported(config)
        if skip:
            console.warn(
                f"bitsandbytes' CPU 4-bit kernels need out_features divisible by {CPU_4BIT_OUT_BLOCK} "
                f"and in_features by {CPU_4BIT_IN_BLOCK}; "
                f"kept in {compute_dtype}: {summarise_modules(skip)}"
            )
    return bnb_config(load, compute_dtype, skip_modules=skip, **settings)


def summarise_modules(names: list[str]) -> str:
    """'mlp.gate_proj, mlp.up_proj (in 2 layers)' rather than one name per layer."""
    kinds: dict[str, int] = {}
    for name in names:
        kind = re.sub(r"^.*?layers\.\d+\.", "", name)
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{kind} (x{count})" if count > 1 else kind for kind, count in kinds.items())
