"""HF model folders: config.json, the weight shards (safetensors or .bin, with or without an index),
reading them one tensor at a time, and writing safetensors shards of a bounded size.

`plan_shards(folder)` validates every shard (safetensors headers against the file sizes, .bin files
loadable with weights_only=True, index entries pointing at files that exist and hold the tensors
named) and returns the tensor shapes in file order: callers run it before writing anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from zhllama.core.checkpoint import safetensors_io, validate
from zhllama.core.errors import UserError
from zhllama.core.paths import read_json

INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLES = ("model.safetensors", "pytorch_model.bin")


def read_config(folder: Path) -> dict:
    """config.json of an HF model folder, checked for the fields every writer needs."""
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: not a model folder (no config.json)")
    return require_positive(path, read_json(path), ("hidden_size", "num_attention_heads", "num_hidden_layers"))


def require_positive(path: Path, data: dict, keys: tuple[str, ...]) -> dict:
    """`data` after checking that each of `keys` is a positive integer (error names file and key)."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{path}: '{key}' missing or not a positive integer")
    return data


def llama_config(state: dict[str, torch.Tensor], **fields) -> dict:
    """An HF LlamaForCausalLM config.json for a state dict in HF names plus the given fields."""
    embed = state["model.embed_tokens.weight"]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": embed.shape[1],
        "intermediate_size": state["model.layers.0.mlp.gate_proj.weight"].shape[0],
        "vocab_size": embed.shape[0],
        "tie_word_embeddings": "lm_head.weight" not in state,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": str(embed.dtype).replace("torch.", ""),
        **fields,
    }


def base_shards(base: Path) -> list[Path]:
    """The weight files of an HF folder (index order), each checked to exist inside the folder."""
    for index_name in INDEXES:
        index = base / index_name
        if index.is_file():
            return validate.index_files(index, base)
    for single in SINGLES:
        if (base / single).is_file():
            return [validate.inside(base / single, base)]
    raise UserError(f"{base}: no model weights (model.safetensors / pytorch_model.bin, or an index)")


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A torch pickle of tensors, with weights_only=True; a refused or corrupt file is a UserError."""
    return validate.load_pickle(path)


def shard_shapes(shard: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of one shard, in the order `read_shard` yields them."""
    if shard.suffix == ".safetensors":
        return safetensors_io.shapes(shard)
    return {k: tuple(v.shape) for k, v in load_bin(shard).items()}


def read_shard(shard: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of one shard, one at a time (safetensors are read without a memory map)."""
    if shard.suffix == ".safetensors":
        yield from safetensors_io.iter_tensors(shard)
    else:
        yield from load_bin(shard).items()


def plan_shards(base: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in file order, after validating every shard (call before writing)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in base_shards(base):
        found = shard_shapes(shard)
        if not found:
            raise UserError(f"{shard}: holds no tensors")
        shapes.update(found)
    for index_name in INDEXES:
        index = base / index_name
        if index.is_file():
            missing = sorted(set(read_json(index)["weight_map"]) - set(shapes))
            if missing:
                raise UserError(f"{index}: tensor '{missing[0]}' is in no shard ({len(missing)} missing)")
    return shapes


def iter_model(base: Path, progress=None) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of an HF folder, shard after shard (`progress()` called after each shard)."""
    for shard in base_shards(base):
        yield from read_shard(shard)
        if progress is not None:
            progress()


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not match:
        raise UserError(f"--shard-size: '{text}' is not a size like 2GB or 500MB")
    unit = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}
    size = int(float(match.group(1)) * unit[match.group(2)])
    if size <= 0:
        raise UserError(f"--shard-size: '{text}' must be greater than 0")
    return size


def write_hf_shards(
    tensors: Iterator[tuple[str, torch.Tensor]],
    shapes: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
    out: Path,
    limit: int,
) -> int:
    """Stream tensors into safetensors shards of at most `limit` bytes (a bigger tensor gets its own)."""
    element = torch.empty(0, dtype=dtype).element_size()
    groups: list[list[str]] = [[]]
    size = total = 0
    for key, shape in shapes.items():
        nbytes = torch.Size(shape).numel() * element
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
        total += nbytes
    names = (
        ["model.safetensors"]
        if len(groups) == 1
        else [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    )
    stream = iter(tensors)
    for name, keys in zip(names, groups, strict=True):
        writer = safetensors_io.StreamWriter(out / name, [(k, dtype, shapes[k]) for k in keys])
        for _ in keys:
            got_key, tensor = next(stream)
            writer.write(got_key, tensor)
        writer.close()
    if len(groups) > 1:
        weight_map = {k: name for name, keys in zip(names, groups, strict=True) for k in keys}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return len(groups)
