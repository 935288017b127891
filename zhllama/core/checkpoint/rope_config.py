"""A model's own RoPE scaling, read from any config.json and carried into every format written.

transformers 5 stores it as `rope_parameters` (`rope_type`, `rope_theta`, `factor`, ...); older
configs as `rope_scaling` (`type` or `rope_type`) plus a top-level `rope_theta`. `parameters()`
reads both, the way llama.cpp's converter does. The writers:

- GGUF: `gguf_fields()` gives the keys llama.cpp's `convert_hf_to_gguf.py` writes (linear and YaRN
  scaling keys; `llama3` as the `rope_freqs.weight` tensor, `llama3_rope_factors`; `dynamic` has no
  GGUF representation, as in llama.cpp).
- Meta `params.json`: `rope_theta`, and for `llama3` scaling Meta's `use_scaled_rope` (Meta's code
  fixes the llama3 parameters at 8 / 1 / 4 / 8192). Meta's format has no field for other values, nor
  for linear/dynamic/YaRN scaling: those travel in `zhllama_overrides.json`
  (the same file LoRA adapters use, `{"config": {...}}`), which zhllama's readers apply.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.paths import read_json

DEFAULT_THETA = 10000.0
OVERRIDES_FILE = "zhllama_overrides.json"
OVERRIDE_KEYS = ("rope_scaling", "rope_parameters", "max_position_embeddings", "rope_theta")


def parameters(config: dict) -> dict:
    """The rope parameters of a config dict: rope_type (default 'default'), rope_theta, factor, ..."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "full_attention" in params:
        params = dict(params["full_attention"])
    if "rope_type" not in params and "type" in params:
        params["rope_type"] = params["type"]
    params.pop("type", None)
    params.setdefault("rope_type", "default")
    if "rope_theta" not in params:
        params["rope_theta"] = float(config.get("rope_theta", DEFAULT_THETA))
    if "original_max_position_embeddings" not in params and "original_max_position_embeddings" in config:
        params["original_max_position_embeddings"] = config["original_max_position_embeddings"]
    return params


def set_parameters(config: dict, params: dict) -> dict:
    """Write `params` into `config` in transformers 5's form (rope_parameters; no rope_scaling)."""
    config = dict(config)
    config.pop("rope_scaling", None)
    config.pop("rope_theta", None)
    config["rope_parameters"] = dict(params)
    return config


def describe(config: dict) -> str:
    p = parameters(config)
    if p["rope_type"] == "default":
        return f"none (theta {p['rope_theta']:g})"
    return f"{p['rope_type']} x{p.get('factor', '?')} (theta {p['rope_theta']:g})"


# ---- adapter / folder overrides ------------------------------------------------------------------
def read_overrides(folder: Path) -> dict:
    """The `config` part of FOLDER/zhllama_overrides.json ({} when absent); checked."""
    path = folder / OVERRIDES_FILE
    data = read_json(path, optional=True)
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise UserError(f"{path}: 'config' must be an object")
    unknown = sorted(set(config) - set(OVERRIDE_KEYS))
    if unknown:
        raise UserError(f"{path}: unsupported config override '{unknown[0]}' (allowed: {', '.join(OVERRIDE_KEYS)})")
    if "max_position_embeddings" in config and (
        not isinstance(config["max_position_embeddings"], int) or config["max_position_embeddings"] <= 0
    ):
        raise UserError(f"{path}: max_position_embeddings must be a positive integer")
    for key in ("rope_scaling", "rope_parameters"):
        value = config.get(key)
        if value is not None and not isinstance(value, dict):
            raise UserError(f"{path}: '{key}' must be an object or null")
    return config


def apply_overrides(config: dict, overrides: dict) -> dict:
    """`config` with an overrides dict applied (rope settings replace the config's own)."""
    if not overrides:
        return config
    config = dict(config)
    rope_keys = {"rope_scaling", "rope_parameters", "rope_theta"} & set(overrides)
    if rope_keys:
        source = overrides.get("rope_parameters") or overrides.get("rope_scaling") or {}
        theta = overrides.get("rope_theta", parameters(config)["rope_theta"])
        config = set_parameters(config, parameters({"rope_parameters": source, "rope_theta": theta}))
    if "max_position_embeddings" in overrides:
        config["max_position_embeddings"] = overrides["max_position_embeddings"]
    return config


# ---- GGUF -------------------------------------------------------------------------------------------
def gguf_fields(config: dict) -> list[tuple[str, object]]:
    """(GGUFWriter method, value) pairs for the rope keys, as llama.cpp's converter writes them."""
    import gguf

    p = parameters(config)
    fields: list[tuple[str, object]] = []
    kind, factor = p["rope_type"], p.get("factor")
    if kind == "linear" and factor is not None:
        fields += [("add_rope_scaling_type", gguf.RopeScalingType.LINEAR), ("add_rope_scaling_factor", factor)]
    elif kind == "yarn" and factor is not None:
        original = p.get("original_max_position_embeddings") or config.get("max_position_embeddings")
        fields += [
            ("add_rope_scaling_type", gguf.RopeScalingType.YARN),
            ("add_rope_scaling_factor", factor),
            ("add_rope_scaling_orig_ctx_len", original),
        ]
        for key, method in (
            ("extrapolation_factor", "add_rope_scaling_yarn_ext_factor"),
            ("attention_factor", "add_rope_scaling_yarn_attn_factor"),
            ("beta_fast", "add_rope_scaling_yarn_beta_fast"),
            ("beta_slow", "add_rope_scaling_yarn_beta_slow"),
        ):
            value = p.get(key, p.get("attn_factor")) if key == "attention_factor" else p.get(key)
            if value is not None:
                fields.append((method, value))
    fields.append(("add_rope_freq_base", p["rope_theta"]))
    return fields


def llama3_rope_factors(config: dict, dim: int) -> list[float] | None:
    """llama.cpp's `rope_freqs.weight` for llama3 scaling (None for other kinds)."""
    p = parameters(config)
    if str(p["rope_type"]).lower() != "llama3":
        return None
    base = p["rope_theta"]
    factor = p.get("factor", 8.0)
    low, high = p.get("low_freq_factor", 1.0), p.get("high_freq_factor", 4.0)
    old = p.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old / low, old / high
    import torch

    factors = []
    for freq in (1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))).tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


# ---- Meta params.json -------------------------------------------------------------------------------
def meta_fields(config: dict) -> tuple[dict, dict]:
    """(params.json fields, overrides Meta's format cannot hold) for the config's rope settings."""
    p = parameters(config)
    fields: dict = {}
    if p["rope_theta"] != DEFAULT_THETA:
        fields["rope_theta"] = p["rope_theta"]
    kind = p["rope_type"]
    if kind == "default":
        return fields, {}
    if kind == "llama3":
        fields["use_scaled_rope"] = True  # Meta's code applies llama3 scaling with fixed 8 / 1 / 4 / 8192
        meta = {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
        if all(p.get(k, v) == v for k, v in meta.items()):
            return fields, {}
    overrides = {"rope_parameters": {k: v for k, v in p.items()}}
    if "max_position_embeddings" in config:
        overrides["max_position_embeddings"] = config["max_position_embeddings"]
    return fields, overrides


def overrides_for(config: dict) -> dict:
    """The overrides a layout without rope fields (TencentPretrain) needs to keep the config's rope."""
    p = parameters(config)
    if p["rope_type"] == "default" and p["rope_theta"] == DEFAULT_THETA:
        return {}
    return {"rope_parameters": p}


def write_overrides(folder: Path, overrides: dict) -> None:
    if overrides:
        (folder / OVERRIDES_FILE).write_text(json.dumps({"config": overrides}, indent=2) + "\n")


def from_meta(params: dict) -> dict:
    """rope_parameters for an HF config from Meta's params.json fields."""
    theta = float(params.get("rope_theta", DEFAULT_THETA))
    if params.get("use_scaled_rope"):
        return {
            "rope_type": "llama3",
            "rope_theta": theta,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    return {"rope_type": "default", "rope_theta": theta}
