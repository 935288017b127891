"""Meta's original LLaMA checkpoint layout (`consolidated.0N.pth` + `params.json`) for older tools.

HF stores q/k projections permuted for its rotary implementation; Meta's layout does not, so
q/k are un-permuted on the way out and permuted back on the way in. The model-parallel shard
count follows the reference scripts: by hidden size (4096: 1, 5120: 2, 6656: 4, 8192: 8; else 1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from zhllama.core.errors import UserError

SHARDS_BY_DIM = {4096: 1, 5120: 2, 6656: 4, 8192: 8}
LAYER_NAMES = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}
TOP_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
SPLIT_DIM_0 = ("wq", "wk", "wv", "w1", "w3", "output")
SPLIT_DIM_1 = ("tok_embeddings", "wo", "w2")


def unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    out, inp = w.shape
    return w.view(heads, 2, out // heads // 2, inp).transpose(1, 2).reshape(out, inp)


def permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    out, inp = w.shape
    return w.view(heads, out // heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def hf_to_meta_name(key: str) -> str | None:
    if key in TOP_NAMES:
        return TOP_NAMES[key]
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", key)
    if match and match.group(2) in LAYER_NAMES:
        return f"layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}.weight"
    if key.endswith("rotary_emb.inv_freq"):
        return None
    raise UserError(f"tensor '{key}' has no place in Meta's LLaMA layout (--format pth supports LLaMA only)")


def params_from_config(config: dict) -> dict:
    params = {
        "dim": config["hidden_size"],
        "multiple_of": 256,
        "n_heads": config["num_attention_heads"],
        "n_layers": config["num_hidden_layers"],
        "norm_eps": config.get("rms_norm_eps", 1e-6),
        "vocab_size": -1,
    }
    kv = config.get("num_key_value_heads", config["num_attention_heads"])
    if kv != config["num_attention_heads"]:
        params["n_kv_heads"] = kv
    return params


def _split_dim(name: str) -> int | None:
    kind = name.split(".")[-2]
    if kind in SPLIT_DIM_0:
        return 0
    if kind in SPLIT_DIM_1:
        return 1
    return None


def write_pth(tensors: Iterator[tuple[str, torch.Tensor]], config: dict, out: Path) -> int:
    """Write consolidated.0N.pth shards + params.json; returns the shard count."""
    if config.get("tie_word_embeddings"):
        raise UserError("--format pth: tied input/output embeddings are not part of Meta's layout")
    params = params_from_config(config)
    heads, kv_heads = params["n_heads"], params.get("n_kv_heads", params["n_heads"])
    n = SHARDS_BY_DIM.get(params["dim"], 1)
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for key, tensor in tensors:
        name = hf_to_meta_name(key)
        if name is None:
            continue
        if name.endswith("attention.wq.weight"):
            tensor = unpermute(tensor, heads)
        elif name.endswith("attention.wk.weight"):
            tensor = unpermute(tensor, kv_heads)
        dim = _split_dim(name)
        for i in range(n):
            shards[i][name] = tensor.clone() if dim is None else tensor.chunk(n, dim=dim)[i].clone()
    for i, shard in enumerate(shards):
        torch.save(shard, out / f"consolidated.{i:02d}.pth")
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    return n


def read_pth(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Meta layout back to an HF LLaMA state dict (for round-trip checks and older checkpoints)."""
    params = json.loads((folder / "params.json").read_text())
    files = sorted(folder.glob("consolidated.*.pth"))
    if not files:
        raise UserError(f"{folder}: no consolidated.*.pth files")
    shards = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    reverse_top = {v: k for k, v in TOP_NAMES.items()}
    reverse_layer = {v: k for k, v in LAYER_NAMES.items()}
    heads, kv_heads = params["n_heads"], params.get("n_kv_heads", params["n_heads"])
    state = {}
    for name in shards[0]:
        dim = _split_dim(name)
        tensor = shards[0][name] if dim is None else torch.cat([s[name] for s in shards], dim=dim)
        if name in reverse_top:
            state[reverse_top[name]] = tensor
            continue
        layer, rest = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name).groups()
        if rest == "attention.wq":
            tensor = permute(tensor, heads)
        elif rest == "attention.wk":
            tensor = permute(tensor, kv_heads)
        state[f"model.layers.{layer}.{reverse_layer[rest]}.weight"] = tensor
    return state, params
