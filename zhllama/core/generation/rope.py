"""Long context by RoPE scaling: `linear`, `dynamic`, `yarn` (transformers' own), `ntk` (fixed or auto).

- `linear|dynamic|yarn F`: written into the model config's `rope_parameters` before loading, so the
  model's own rotary embedding does the work exactly as transformers defines it.
- `ntk ALPHA`: the base becomes base * alpha^(d/(d-2)) (d = head dim): a plain config change.
- `ntk auto`: the Chinese-LLaMA-Alpaca adaptive rule. While the sequence length L fits the trained
  context P the base is kept; beyond it alpha = L / (P/2) - 1 is recomputed at every decoding step
  (`AutoNTK.update`), so short prompts run exactly like the unscaled model.
"""

from __future__ import annotations

from dataclasses import dataclass

from zhllama.core.errors import UserError

METHODS = ("linear", "dynamic", "ntk", "yarn")
AUTO_CONTEXT_MULTIPLE = 4  # default usable context of `ntk auto`: 4x the trained one


def inv_freq(dim: int, base: float):
    """RoPE inverse frequencies 1 / base^(2i/d), computed as transformers computes them."""
    import torch

    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def ntk_base(base: float, alpha: float, dim: int) -> float:
    """The NTK-aware base: base * alpha^(d/(d-2))."""
    return base * alpha ** (dim / (dim - 2))


def auto_alpha(seq_len: int, trained: int) -> float | None:
    """Alpha of the adaptive rule; None while the sequence fits the trained context."""
    if seq_len <= trained:
        return None
    return seq_len / (trained / 2) - 1


def parse_factor(method: str, factor: str | float | None) -> float | str:
    """`--rope-factor` as a number > 0, or 'auto' (only for ntk)."""
    if method not in METHODS:
        raise UserError(f"--rope-scaling: unknown method '{method}' (expected one of {', '.join(METHODS)})")
    if factor is None or str(factor) == "auto":
        if method != "ntk":
            raise UserError(f"--rope-factor: '{method}' needs a number (only ntk accepts 'auto')")
        return "auto"
    try:
        value = float(factor)
    except ValueError:
        raise UserError(f"--rope-factor: expected a number or 'auto', got '{factor}'") from None
    if value <= 0:
        raise UserError(f"--rope-factor: must be > 0, got {value}")
    return value


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


@dataclass
class RopePlan:
    """What scaling did to a config: the usable context and, for `ntk auto`, the trained one."""

    context_length: int
    auto: bool = False
    trained: int = 0
    base: float = 10000.0
    dim: int = 0


def configure(config, method: str | None, factor: str | float | None) -> RopePlan:
    """Apply `method`/`factor` to a transformers config (in place) before the model is built."""
    trained = config.max_position_embeddings
    base = float(config.rope_parameters["rope_theta"])
    if method is None:
        if factor is not None:
            raise UserError("--rope-factor: give --rope-scaling too (linear, dynamic, ntk or yarn)")
        return RopePlan(trained, base=base)
    value = parse_factor(method, factor)
    dim = head_dim(config)
    if value == "auto":
        return RopePlan(trained * AUTO_CONTEXT_MULTIPLE, auto=True, trained=trained, base=base, dim=dim)
    if method == "ntk":
        config.rope_parameters = {"rope_type": "default", "rope_theta": ntk_base(base, value, dim)}
        return RopePlan(int(trained * value), base=base)
    params = {"rope_type": method, "rope_theta": base, "factor": value}
    if method == "yarn":
        params["original_max_position_embeddings"] = trained
    config.rope_parameters = params
    return RopePlan(int(trained * value), base=base)


class AutoNTK:
    """Keeps a loaded model's rotary inverse frequencies right for the current sequence length."""

    def __init__(self, rotary_embedding, plan: RopePlan):
        self.rotary = rotary_embedding
        self.plan = plan
        self.alpha: float | None = None

    def update(self, seq_len: int) -> None:
        alpha = auto_alpha(seq_len, self.plan.trained)
        if alpha == self.alpha:
            return
        base = self.plan.base if alpha is None else ntk_base(self.plan.base, alpha, self.plan.dim)
        self.rotary.inv_freq.copy_(inv_freq(self.plan.dim, base).to(self.rotary.inv_freq.device))
        self.alpha = alpha
