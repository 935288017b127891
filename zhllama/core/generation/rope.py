"""Long context by RoPE scaling: `linear`, `dynamic`, `yarn` (transformers' own), `ntk` (fixed or auto).

Everything composes with the model's OWN scaling (a 16K model's `linear x4` in config.json), as
Chinese-LLaMA-Alpaca-2's `attn_and_long_ctx_patches.py` does (positions / scaling_factor, NTK on
the base):

- `ntk ALPHA`: the base becomes base * alpha^(d/(d-2)) (d = head dim), inside the config's own
  scaling (`rope_theta` of its rope parameters), so a linear x4 model stays linear x4 on the new base.
- `ntk auto`: the adaptive rule. While the sequence length L fits the trained context P
  (`max_position_embeddings`) the model runs exactly as configured; beyond it
  alpha = L / (P/2) - 1 is recomputed at every decoding step (`AutoNTK.update`) and the NTK
  frequencies keep the model's own per-frequency scaling (÷4 for linear x4).
- `linear|dynamic|yarn F`: written into the config's `rope_parameters` before loading, so the
  model's own rotary embedding does the work exactly as transformers defines it. On a model that
  already has scaling, linear on linear composes (factors multiply); any other pair is refused with
  a message rather than silently replacing the model's scaling. `dynamic` models take no NTK on
  top (transformers rescales them itself).
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


def own_scaling(config) -> dict:
    params = dict(getattr(config, "rope_parameters", None) or {})
    params.setdefault("rope_type", "default")
    return params


def _refuse(method: str, own: dict, why: str) -> UserError:
    kind = f"{own['rope_type']} x{own.get('factor')}"
    return UserError(f"--rope-scaling {method}: the model's config.json already has rope scaling {kind}; {why}")


def configure(config, method: str | None, factor: str | float | None) -> RopePlan:
    """Apply `method`/`factor` to a transformers config (in place) before the model is built."""
    trained = config.max_position_embeddings
    own = own_scaling(config)
    base = float(own.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    if method is None:
        if factor is not None:
            raise UserError("--rope-factor: give --rope-scaling too (linear, dynamic, ntk or yarn)")
        return RopePlan(trained, base=base)
    value = parse_factor(method, factor)
    dim = head_dim(config)
    scaled = own["rope_type"] != "default"
    if method == "ntk":
        if own["rope_type"] == "dynamic":
            raise _refuse(method, own, "transformers already rescales it by length (use it as is)")
        if value == "auto":
            return RopePlan(trained * AUTO_CONTEXT_MULTIPLE, auto=True, trained=trained, base=base, dim=dim)
        config.rope_parameters = {**own, "rope_theta": ntk_base(base, value, dim)}
        return RopePlan(int(trained * value), base=base)
    if scaled:
        if method == "linear" and own["rope_type"] == "linear":
            config.rope_parameters = {**own, "factor": float(own["factor"]) * value}
            return RopePlan(int(trained * value), base=base)
        raise _refuse(
            method,
            own,
            "a second scaling would replace it. Use --rope-scaling ntk (it composes with the model's "
            "scaling), or linear on a linear model",
        )
    params = {"rope_type": method, "rope_theta": base, "factor": value}
    if method == "yarn":
        params["original_max_position_embeddings"] = trained
    config.rope_parameters = params
    return RopePlan(int(trained * value), base=base)


class AutoNTK:
    """Keeps a loaded model's rotary inverse frequencies right for the current sequence length.

    The model's own scaling is kept: at load, the ratio between the rotary embedding's frequencies
    and the plain ones (1/4 everywhere for linear x4; per frequency for YaRN or llama3) is recorded
    and applied to the NTK frequencies, as CLA2 divides positions by the scaling factor.
    """

    def __init__(self, rotary_embedding, plan: RopePlan):
        self.rotary = rotary_embedding
        self.plan = plan
        self.alpha: float | None = None
        self.original = rotary_embedding.inv_freq.detach().clone()
        self.ratio = self.original.float() / inv_freq(plan.dim, plan.base).to(self.original.device)

    def frequencies(self, seq_len: int):
        alpha = auto_alpha(seq_len, self.plan.trained)
        if alpha is None:
            return self.original
        return (
            inv_freq(self.plan.dim, ntk_base(self.plan.base, alpha, self.plan.dim)).to(self.ratio.device) * self.ratio
        )

    def update(self, seq_len: int) -> None:
        alpha = auto_alpha(seq_len, self.plan.trained)
        if alpha == self.alpha:
            return
        self.rotary.inv_freq.copy_(self.frequencies(seq_len).to(self.rotary.inv_freq.dtype))
        self.alpha = alpha
