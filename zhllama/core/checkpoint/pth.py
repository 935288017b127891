"""Meta's original LLaMA checkpoint layout (`consolidated.NN.pth` + `params.json` + `tokenizer.model`).

HF stores q/k projections permuted for its rotary implementation; Meta's layout does not, so
q/k are un-permuted on the way out and permuted back on the way in. The model-parallel shard
count follows the reference scripts: by hidden size (4096: 1, 5120: 2, 6656: 4, 8192: 8; else 1);
each shard holds a slice of the column-parallel (`wq wk wv w1 w3 output`: dim 0) and row-parallel
(`wo w2`, and LLaMA-1/2's `tok_embeddings`: dim 1) weights, norms replicated. Reading concatenates
them back (an embedding split by rows, as Llama 3's, is recognised by its shape).
Rope settings go into params.json where Meta's format has a field (`rope_theta`, llama3's
`use_scaled_rope`); anything else, and the context length, into `zhllama_overrides.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from zhllama.core.checkpoint import names, rope_config
from zhllama.core.checkpoint.shards import llama_config, load_bin, require_positive
from zhllama.core.errors import UserError
from zhllama.core.paths import read_json

SHARDS_BY_DIM = {4096: 1, 5120: 2, 6656: 4, 8192: 8}
SPLIT_DIM_0 = ("wq", "wk", "wv", "w1", "w3", "output")
SPLIT_DIM_1 = ("tok_embeddings", "wo", "w2")
DEFAULT_CONTEXT = 2048  # Meta's ModelArgs.max_seq_len default
PARAMS_REQUIRED = ("dim", "n_layers", "n_heads")


def params_from_config(config: dict) -> tuple[dict, dict]:
    """(params.json, zhllama_overrides.json config part) for an HF config."""
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
    rope_fields, overrides = rope_config.meta_fields(config)
    params.update(rope_fields)
    context = config.get("max_position_embeddings", DEFAULT_CONTEXT)
    if context != DEFAULT_CONTEXT:
        overrides["max_position_embeddings"] = context
    return params, overrides


def _split_dim(meta_name: str) -> int | None:
    kind = meta_name.split(".")[-2]
    if kind in SPLIT_DIM_0:
        return 0
    if kind in SPLIT_DIM_1:
        return 1
    return None


def write_pth(tensors: Iterator[tuple[str, torch.Tensor]], config: dict, out: Path) -> int:
    """Write consolidated.0N.pth shards + params.json (+ overrides); returns the shard count."""
    if config.get("tie_word_embeddings"):
        raise UserError("--format pth: tied input/output embeddings are not part of Meta's layout")
    params, overrides = params_from_config(config)
    heads, kv_heads = params["n_heads"], params.get("n_kv_heads", params["n_heads"])
    n = SHARDS_BY_DIM.get(params["dim"], 1)
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for key, tensor in tensors:
        name = names.to_format(key, "meta")
        if name is None:
            continue
        count = names.permuted_heads(key, heads, kv_heads)
        if count is not None:
            tensor = names.unpermute(tensor, count)
        dim = _split_dim(name)
        for i in range(n):
            shards[i][name] = tensor.clone() if dim is None else tensor.chunk(n, dim=dim)[i].clone()
    for i, shard in enumerate(shards):
        torch.save(shard, out / f"consolidated.{i:02d}.pth")
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    rope_config.write_overrides(out, overrides)
    return n


def shard_files(folder: Path) -> list[Path]:
    """consolidated.00.pth .. consolidated.NN.pth, checked to be complete."""
    files = sorted(folder.glob("consolidated.*.pth"))
    if not files:
        raise UserError(f"{folder}: no consolidated.*.pth files")
    numbers = []
    for f in files:
        match = re.fullmatch(r"consolidated\.(\d+)\.pth", f.name)
        if not match:
            raise UserError(f"{f}: unexpected shard name (expected consolidated.NN.pth)")
        numbers.append(int(match.group(1)))
    for expected, got in enumerate(numbers):
        if expected != got:
            raise UserError(f"{folder / f'consolidated.{expected:02d}.pth'}: shard missing ({len(files)} shards found)")
    return files


def read_params(folder: Path) -> dict:
    path = folder / "params.json"
    params = require_positive(path, read_json(path), PARAMS_REQUIRED)
    heads = params["n_heads"]
    kv = params.get("n_kv_heads") or heads
    if params["dim"] % heads or heads % kv:
        raise UserError(f"{path}: dim {params['dim']} / n_heads {heads} / n_kv_heads {kv} do not divide")
    return params


def read_pth(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Meta layout back to an HF LLaMA state dict (in Meta's tensor order) and params.json."""
    params = read_params(folder)
    files = shard_files(folder)
    shards = [load_bin(f) for f in files]
    heads = params["n_heads"]
    kv_heads = params.get("n_kv_heads") or heads
    state = {}
    for name in shards[0]:
        if name.endswith("rope.freqs"):
            continue
        missing = [f for f, s in zip(files, shards, strict=True) if name not in s]
        if missing:
            raise UserError(f"{missing[0]}: tensor '{name}' missing (present in {files[0].name})")
        dim = _split_dim(name)
        if dim == 1 and name == "tok_embeddings.weight" and shards[0][name].shape[1] == params["dim"]:
            dim = 0  # split by rows (Llama 3's VocabParallelEmbedding)
        parts = [s[name] for s in shards]
        tensor = parts[0] if dim is None or len(parts) == 1 else torch.cat(parts, dim=dim)
        key = names.from_format(name, "meta")
        count = names.permuted_heads(key, heads, kv_heads)
        if count is not None:
            tensor = names.permute(tensor, count)
        state[key] = tensor
    _check_shapes(folder, state, params)
    return state, params


def _check_shapes(folder: Path, state: dict[str, torch.Tensor], params: dict) -> None:
    dim, layers = params["dim"], params["n_layers"]
    embed = state.get("model.embed_tokens.weight")
    if embed is None or embed.shape[1] != dim:
        raise UserError(f"{folder / 'params.json'}: dim {dim} does not match the checkpoint's embedding")
    present = {int(k.split(".")[2]) for k in state if k.startswith("model.layers.")}
    if present != set(range(layers)):
        raise UserError(f"{folder / 'params.json'}: n_layers {layers}, checkpoint has {len(present)} layers")
    q = state["model.layers.0.self_attn.q_proj.weight"]
    if q.shape != (dim, dim):
        raise UserError(f"{folder / 'params.json'}: n_heads/dim do not match the checkpoint (wq {tuple(q.shape)})")


def hf_config(params: dict, state: dict[str, torch.Tensor], overrides: dict, bos: int | None, eos: int | None) -> dict:
    """The HF config.json of a Meta checkpoint (transformers' LlamaConfig fields)."""
    heads = params["n_heads"]
    config = llama_config(
        state,
        num_hidden_layers=params["n_layers"],
        num_attention_heads=heads,
        num_key_value_heads=params.get("n_kv_heads") or heads,
        rms_norm_eps=params.get("norm_eps", 1e-6),
        max_position_embeddings=DEFAULT_CONTEXT,
        bos_token_id=bos,
        eos_token_id=eos,
        rope_parameters=rope_config.from_meta(params),
    )
    return rope_config.apply_overrides(config, overrides)
