"""`ModelOptions`: the one group of model flags shared by chat, serve, webui, predict and every eval.

Declared once here (help text in field metadata); `zhllama.cli.model_options` turns it into Typer
flags. `validated()` normalises spellings and checks every value before anything slow happens, so a
typo costs a one-line error, not a model load. Importing this module is cheap (no torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from zhllama.core.errors import UserError, unknown_choice
from zhllama.core.schema import option

# Every spelling users type for a dtype, mapped to torch's name (merge, quantize and chat agree).
DTYPE_ALIASES = {
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}
LOAD_CHOICES = ("4bit", "8bit")
ATTN_CHOICES = ("sdpa", "eager", "flash_attention_2")
ROPE_CHOICES = ("linear", "dynamic", "ntk", "yarn")


def parse_dtype(value: str | None, option_name: str = "--dtype") -> str | None:
    """Canonical torch dtype name for any accepted spelling (None stays None: the device's default)."""
    if value is None or value == "auto":
        return None
    canonical = DTYPE_ALIASES.get(value.lower())
    if canonical is None:
        raise unknown_choice(f"{option_name} value", value, sorted(DTYPE_ALIASES))
    return canonical


def parse_device(value: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` (checked for syntax only; availability at load time)."""
    spec = value.strip().lower()
    if spec in ("auto", "cpu", "cuda"):
        return spec
    if spec.startswith("cuda:") and spec[5:].isdigit():
        return spec
    raise UserError(f"--device: '{value}' is not auto, cpu, cuda or cuda:N")


def parse_gpu_layers(value: str) -> int | None:
    """llama.cpp layers to offload: None = automatic (all when llama.cpp can offload), -1 = all."""
    spec = value.strip().lower()
    if spec == "auto":
        return None
    if spec == "all":
        return -1
    if spec.isdigit():
        return int(spec)
    raise UserError(f"--gpu-layers: '{value}' is not a number, all or auto")


@dataclass
class ModelOptions:
    """What model to load and how; engines use what applies to them and refuse what cannot apply."""

    model: str = option(
        "",
        "Model: HF folder, .gguf file, hub id ORG/NAME or ORG/NAME@REV (local cache), or a Meta consolidated.*.pth folder.",
        "--model",
        "-m",
        required=True,
    )
    engine: str | None = option(None, "transformers, llamacpp or vllm (default: from the model).")
    device: str = option("auto", "auto (the GPU when present), cpu, cuda or cuda:N.")
    dtype: str | None = option(None, "fp32, bf16 or fp16 (default: bf16 on GPU, fp16 without bf16, fp32 on CPU).")
    load: str | None = option(None, "Quantize on load with bitsandbytes: 4bit (NF4) or 8bit.")
    lora: list[Path] = option(help="LoRA adapter folder(s), applied in order.", factory=list)
    attn: str = option("sdpa", "Attention: sdpa, eager or flash_attention_2 (needs flash-attn).")
    rope_scaling: str | None = option(None, "Long context: linear, dynamic, ntk or yarn.")
    rope_factor: str | None = option(None, "RoPE scaling factor F, or auto (adaptive NTK; the ntk default).")
    context_length: int | None = option(None, "Usable context in tokens (default: from the model).")
    gpu_layers: str = option("auto", "llama.cpp: layers offloaded to the GPU: N, all, or auto.")
    threads: int | None = option(None, "llama.cpp: CPU threads (default: llama.cpp's choice).")
    tensor_parallel: int = option(1, "vLLM: GPUs to split the model over (tensor parallelism).", "--tensor-parallel")

    def validated(self) -> ModelOptions:
        """A copy with canonical spellings; raises `UserError` naming the first bad option."""
        if not str(self.model).strip():
            raise UserError("--model: missing (a model folder, .gguf file or hub id)")
        if self.load is not None and self.load not in LOAD_CHOICES:
            raise unknown_choice("--load value", self.load, LOAD_CHOICES)
        if self.attn not in ATTN_CHOICES:
            raise unknown_choice("--attn value", self.attn, ATTN_CHOICES)
        if self.rope_scaling is not None and self.rope_scaling not in ROPE_CHOICES:
            raise unknown_choice("--rope-scaling value", self.rope_scaling, ROPE_CHOICES)
        if self.context_length is not None and self.context_length < 1:
            raise UserError(f"--context-length: must be at least 1, got {self.context_length}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads: must be at least 1, got {self.threads}")
        if self.tensor_parallel < 1:
            raise UserError(f"--tensor-parallel: must be at least 1, got {self.tensor_parallel}")
        if self.tensor_parallel > 1 and self.engine != "vllm":
            raise UserError(f"--tensor-parallel {self.tensor_parallel}: only --engine vllm splits a model over GPUs")
        parse_gpu_layers(self.gpu_layers)
        return dataclasses.replace(
            self,
            model=str(self.model),
            device=parse_device(self.device),
            dtype=parse_dtype(self.dtype),
            lora=[Path(p) for p in self.lora],
        )

    def identity(self) -> str:
        """The model's identity in result caches and summaries (eval's `predictions.jsonl` prompt
        hashes, LongBench's summary): the source, adapters, on-load quantization and dtype, and the
        flags that change outputs (rope scaling, context length) when given. The one place it is built."""
        base = f"{self.model}|{','.join(map(str, self.lora))}|{self.load}|{self.dtype}"
        extra = (self.rope_scaling, self.rope_factor, self.context_length)
        return base + ("|" + "|".join(map(str, extra)) if any(v is not None for v in extra) else "")
