"""Where a model runs and in which dtype: the GPU when present, bf16 there, fp32 on CPU.

`plan_placement` is a pure function of the request and the machine's facts, so the decision is
unit-tested on CPU; `placement` asks torch for those facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from zhllama.core.errors import UserError


@dataclass(frozen=True)
class Placement:
    """How `from_pretrained` places a model, and where its inputs go."""

    device: str  # "cpu" or "cuda:N": where input tensors are put
    device_map: str | dict | None  # for from_pretrained: None (plain CPU), {"": N}, "auto", "cpu"
    dtype: str  # torch dtype name

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


def plan_placement(device: str, dtype: str | None, *, cuda_count: int, bf16_supported: bool) -> Placement:
    """Decide the placement; `device` is auto/cpu/cuda/cuda:N, `dtype` a torch name or None (default)."""
    if device == "auto":
        device = "cuda" if cuda_count else "cpu"
    if device == "cpu":
        return Placement("cpu", None, dtype or "float32")
    if not device.startswith("cuda"):
        raise UserError(f"--device: '{device}' is not auto, cpu, cuda or cuda:N")
    if cuda_count == 0:
        raise UserError(f"--device {device}: no CUDA GPU is visible to torch")
    default = "bfloat16" if bf16_supported else "float16"
    if dtype == "bfloat16" and not bf16_supported:
        raise UserError("--dtype bf16: this GPU does not support bfloat16; use --dtype fp16")
    if ":" in device:
        index = int(device.split(":", 1)[1])
        if index >= cuda_count:
            raise UserError(f"--device {device}: only {cuda_count} GPU(s) visible (cuda:0..cuda:{cuda_count - 1})")
        return Placement(f"cuda:{index}", {"": index}, dtype or default)
    if cuda_count > 1:  # spread the layers over every GPU (accelerate's big-model placement)
        return Placement("cuda:0", "auto", dtype or default)
    return Placement("cuda:0", {"": 0}, dtype or default)


def placement(device: str, dtype: str | None) -> Placement:
    """`plan_placement` with this machine's facts."""
    import torch

    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    bf16 = bool(cuda_count) and torch.cuda.is_bf16_supported()
    return plan_placement(device, dtype, cuda_count=cuda_count, bf16_supported=bf16)
