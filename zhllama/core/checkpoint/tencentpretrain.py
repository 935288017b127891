"""TencentPretrain's LLaMA checkpoints (the format of Chinese-ChatLLaMA).

As TencentPretrain's own `convert_llama_from_huggingface_to_tencentpretrain.py` /
`convert_llama_from_tencentpretrain_to_huggingface.py` write and read them: one `torch.save`d
dict with the key names of `names.LAYER_TABLE` / `TOP_TABLE` (`embedding.word.embedding.weight`,
`encoder.transformer.N.self_attn.linear_layers.0.weight`, ...), q/k in Meta's (unpermuted) rotary
layout, next to TencentPretrain's model config (`models/llama/7b_config.json` fields: emb_size,
feedforward_size, hidden_size, heads_num, layers_num, local_kv_head_num, max_seq_length, ...).
A zhllama TencentPretrain folder holds `model.bin`, that `config.json` and `tokenizer.model`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from zhllama.core.checkpoint import names, rope_config
from zhllama.core.checkpoint.shards import llama_config, load_bin, require_positive
from zhllama.core.errors import UserError
from zhllama.core.paths import read_json

WEIGHTS = "model.bin"
REQUIRED = ("emb_size", "feedforward_size", "heads_num", "layers_num")
# The fixed part of TencentPretrain's llama config (models/llama/*_config.json).
FIXED = {
    "hidden_act": "silu",
    "dropout": 0.0,
    "data_processor": "lm",
    "embedding": ["word"],
    "remove_transformer_bias": True,
    "remove_embedding_layernorm": True,
    "rotary_position_embedding": True,
    "encoder": "transformer",
    "feed_forward": "gated",
    "mask": "causal",
    "layernorm_positioning": "pre",
    "layernorm": "rms",
    "target": ["lm"],
}


def is_tp_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "emb_size" in data and "layers_num" in data


def tp_config(config: dict) -> dict:
    """TencentPretrain's llama config for an HF config."""
    heads = config["num_attention_heads"]
    out = {
        "emb_size": config["hidden_size"],
        "feedforward_size": config["intermediate_size"],
        "hidden_size": config["hidden_size"],
        "heads_num": heads,
        "layers_num": config["num_hidden_layers"],
        "max_seq_length": config.get("max_position_embeddings", 2048),
        "layernorm_eps": config.get("rms_norm_eps", 1e-6),
        **FIXED,
    }
    kv = config.get("num_key_value_heads", heads)
    if kv != heads:
        out["local_kv_head_num"] = kv
    return out


def weights_file(folder: Path) -> Path:
    files = sorted(folder.glob("*.bin"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise UserError(f"{folder}: expected one TencentPretrain .bin checkpoint, found {found}")
    return files[0]


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if path.is_file() and not is_tp_config(path):
        raise UserError(
            f"{path}: not a TencentPretrain llama config (no emb_size / layers_num); an HF folder? use --from hf"
        )
    config = require_positive(path, read_json(path), REQUIRED)
    if config["emb_size"] % config["heads_num"]:
        raise UserError(f"{path}: emb_size {config['emb_size']} is not a multiple of heads_num")
    return config


def hf_config(tp: dict, state: dict[str, torch.Tensor], bos: int | None, eos: int | None) -> dict:
    heads = tp["heads_num"]
    return llama_config(
        state,
        num_hidden_layers=tp["layers_num"],
        num_attention_heads=heads,
        num_key_value_heads=tp.get("local_kv_head_num") or heads,
        rms_norm_eps=tp.get("layernorm_eps", 1e-6),
        max_position_embeddings=tp.get("max_seq_length", 2048),
        bos_token_id=bos,
        eos_token_id=eos,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def read_tp(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """TencentPretrain checkpoint -> HF state dict (q/k permuted to HF's layout) and its config."""
    tp = read_config(folder)
    file = weights_file(folder)
    raw = load_bin(file)
    heads = tp["heads_num"]
    kv = tp.get("local_kv_head_num") or heads
    state = {}
    for name, tensor in raw.items():
        key = names.from_format(name, "tencentpretrain")
        count = names.permuted_heads(key, heads, kv)
        state[key] = names.permute(tensor, count) if count is not None else tensor
    for needed in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        if needed not in state:
            raise UserError(f"{file}: tensor '{names.to_format(needed, 'tencentpretrain')}' missing")
    layers = {int(k.split(".")[2]) for k in state if k.startswith("model.layers.")}
    if layers != set(range(tp["layers_num"])):
        raise UserError(f"{folder / 'config.json'}: layers_num {tp['layers_num']}, checkpoint has {len(layers)}")
    if state["model.embed_tokens.weight"].shape[1] != tp["emb_size"]:
        raise UserError(f"{folder / 'config.json'}: emb_size {tp['emb_size']} does not match {file.name}")
    return state, tp


def write_tp(tensors: Iterator[tuple[str, torch.Tensor]], config: dict, out: Path) -> None:
    if config.get("tie_word_embeddings"):
        raise UserError("--to tencentpretrain: tied input/output embeddings are not part of TencentPretrain's llama")
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    state = {}
    for key, tensor in tensors:
        name = names.to_format(key, "tencentpretrain")
        if name is None:
            continue
        count = names.permuted_heads(key, heads, kv)
        state[name] = names.unpermute(tensor, count).contiguous() if count is not None else tensor
    torch.save(state, out / WEIGHTS)
    (out / "config.json").write_text(json.dumps(tp_config(config), indent=2) + "\n")
    rope_config.write_overrides(out, rope_config.overrides_for(config))
