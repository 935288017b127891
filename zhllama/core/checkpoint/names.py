"""The one table of LLaMA tensor names: HF (transformers) <-> Meta <-> GGUF <-> TencentPretrain.

Every format writer and reader in zhllama maps names through `to_format` / `from_format`, so a
new module (or a new format) is one row here. Meta and TencentPretrain store q/k unpermuted (the
rotary layout of Meta's code); HF permutes them for its half-split rotary implementation; GGUF
(llama.cpp) uses Meta's layout too. `PERMUTED` names the two modules concerned.
"""

from __future__ import annotations

import re

from zhllama.core.errors import UserError

FORMATS = ("hf", "meta", "gguf", "tencentpretrain")

# per-layer module: hf, meta, gguf, tencentpretrain ("{i}" is the layer index)
LAYER_TABLE: tuple[tuple[str, str, str, str], ...] = (
    ("self_attn.q_proj", "attention.wq", "attn_q", "self_attn.linear_layers.0"),
    ("self_attn.k_proj", "attention.wk", "attn_k", "self_attn.linear_layers.1"),
    ("self_attn.v_proj", "attention.wv", "attn_v", "self_attn.linear_layers.2"),
    ("self_attn.o_proj", "attention.wo", "attn_output", "self_attn.final_linear"),
    ("mlp.gate_proj", "feed_forward.w1", "ffn_gate", "feed_forward.linear_gate"),
    ("mlp.down_proj", "feed_forward.w2", "ffn_down", "feed_forward.linear_2"),
    ("mlp.up_proj", "feed_forward.w3", "ffn_up", "feed_forward.linear_1"),
    ("input_layernorm", "attention_norm", "attn_norm", "layer_norm_1"),
    ("post_attention_layernorm", "ffn_norm", "ffn_norm", "layer_norm_2"),
)
# whole-model tensors (full names, with the .weight suffix)
TOP_TABLE: tuple[tuple[str, str, str, str], ...] = (
    ("model.embed_tokens.weight", "tok_embeddings.weight", "token_embd.weight", "embedding.word.embedding.weight"),
    ("model.norm.weight", "norm.weight", "output_norm.weight", "encoder.layer_norm.weight"),
    ("lm_head.weight", "output.weight", "output.weight", "target.lm.output_layer.weight"),
)
LAYER_PREFIX = {
    "hf": "model.layers.{i}.",
    "meta": "layers.{i}.",
    "gguf": "blk.{i}.",
    "tencentpretrain": "encoder.transformer.{i}.",
}
PERMUTED = {"self_attn.q_proj": "q", "self_attn.k_proj": "k"}  # hf module -> which head count applies

_COLUMN = {name: i for i, name in enumerate(FORMATS)}
_LAYER_RE = {
    fmt: re.compile(re.escape(prefix).replace(r"\{i\}", r"(\d+)") + r"(.+)\.(weight|bias)$")
    for fmt, prefix in LAYER_PREFIX.items()
}
# tensors that carry no weights of their own (recomputed by every runtime)
SKIPPED = ("rotary_emb.inv_freq",)


def to_format(key: str, fmt: str) -> str | None:
    """The name of HF tensor `key` in `fmt`; None for buffers no format stores (rotary inv_freq)."""
    if key.endswith(SKIPPED):
        return None
    col = _COLUMN[fmt]
    for row in TOP_TABLE:
        if row[0] == key:
            return row[col]
    match = _LAYER_RE["hf"].fullmatch(key)
    if match:
        layer, module, suffix = match.groups()
        for row in LAYER_TABLE:
            if row[0] == module:
                return LAYER_PREFIX[fmt].format(i=layer) + f"{row[col]}.{suffix}"
    raise UserError(f"tensor '{key}' has no {fmt} name (only LLaMA-architecture models are supported)")


def from_format(key: str, fmt: str) -> str:
    """The HF name of tensor `key` written in `fmt`."""
    col = _COLUMN[fmt]
    for row in TOP_TABLE:
        if row[col] == key:
            return row[0]
    match = _LAYER_RE[fmt].fullmatch(key)
    if match:
        layer, module, suffix = match.groups()
        for row in LAYER_TABLE:
            if row[col] == module:
                return f"model.layers.{layer}.{row[0]}.{suffix}"
    raise UserError(f"tensor '{key}' is not a LLaMA tensor of the {fmt} layout")


def permuted_heads(key: str, heads: int, kv_heads: int) -> int | None:
    """For an HF q/k projection weight: the head count of its rotary permutation; else None."""
    match = _LAYER_RE["hf"].fullmatch(key)
    if not match or match.group(3) != "weight" or match.group(2) not in PERMUTED:
        return None
    return heads if PERMUTED[match.group(2)] == "q" else kv_heads


def unpermute(w, heads: int):
    """HF's rotary layout -> Meta's (what llama.cpp, Meta and TencentPretrain store)."""
    out, inp = w.shape
    return w.view(heads, 2, out // heads // 2, inp).transpose(1, 2).reshape(out, inp)


def permute(w, heads: int):
    """Meta's rotary layout -> HF's."""
    out, inp = w.shape
    return w.view(heads, out // heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)
