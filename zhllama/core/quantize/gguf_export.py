"""Write a llama.cpp GGUF file straight from an HF LLaMA checkpoint with the `gguf` package.

The file holds what llama.cpp's own `convert_hf_to_gguf.py` writes for the same folder (checked
key by key in tests): `general.*` (gguf-py's `Metadata`), the llama hyperparameters, the model's
rope scaling (`checkpoint.rope_config`: linear/YaRN keys, llama3 as `rope_freqs.weight`), and the
vocabulary (`gguf_vocab`). Tensor names come from the one table in `checkpoint.names`; q/k are
un-permuted back to Meta's rotary layout, which llama.cpp expects. Tensors whose row length is not
a multiple of the quant block fall back to F16. Every input is validated before the file is opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zhllama.core.checkpoint import names, rope_config
from zhllama.core.checkpoint.shards import iter_model, plan_shards, read_config, require_positive
from zhllama.core.errors import UserError
from zhllama.core.paths import read_json
from zhllama.core.quantize.gguf_types import TYPES
from zhllama.core.quantize.gguf_vocab import check_tokenizer_files, write_vocab

FILE_TYPES = {
    "F32": "ALL_F32",
    "F16": "MOSTLY_F16",
    "BF16": "MOSTLY_BF16",
    "Q8_0": "MOSTLY_Q8_0",
    "Q4_0": "MOSTLY_Q4_0",
    "Q4_1": "MOSTLY_Q4_1",
    "Q5_0": "MOSTLY_Q5_0",
    "Q5_1": "MOSTLY_Q5_1",
}
# Like llama.cpp, keep the output projection (or the tied embedding that serves as output) at
# higher precision in 4/5-bit files: it is the most sensitive tensor. llama.cpp uses Q6_K, which
# gguf-py cannot write, so Q8_0 is used.
OUTPUT_PRECISION = {"Q4_0": "Q8_0", "Q4_1": "Q8_0", "Q5_0": "Q8_0", "Q5_1": "Q8_0"}


def check_model(model_dir: Path) -> dict:
    """Read and check everything a GGUF is built from (config, every shard, tokenizer files)."""
    config = read_config(model_dir)
    if config.get("model_type") != "llama":
        raise UserError(f"{model_dir}: architecture '{config.get('model_type')}' is not supported (llama only)")
    require_positive(model_dir / "config.json", config, ("vocab_size", "intermediate_size"))
    plan_shards(model_dir)  # truncated files, offsets past the end, index naming missing shards
    check_tokenizer_files(model_dir)
    return config


def write_gguf(model_dir: str | Path, output: Path, qtype: str = "F16", progress=None) -> dict:
    """Convert `model_dir` into the GGUF file `output` (a path that the caller renames into place).

    Every input is read and checked (config, every shard, the tokenizer files) before `output` is
    opened.
    """
    import gguf

    model_dir = Path(model_dir)
    qtype = qtype.upper()
    if qtype not in TYPES:
        raise UserError(f"--type: '{qtype}' is not one of {', '.join(TYPES)} (K-quants need the llamacpp extra)")
    config = check_model(model_dir)
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    vocab_size = config["vocab_size"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads

    writer = gguf.GGUFWriter(str(output), "llama")
    target = getattr(gguf.GGMLQuantizationType, qtype)
    count = 0
    tied = config.get("tie_word_embeddings", False)
    for key, tensor in iter_model(model_dir):
        name = names.to_format(key, "gguf")
        if name is None:
            continue
        data = tensor.to(torch.float32)
        rotary_heads = names.permuted_heads(key, heads, kv_heads)
        if rotary_heads is not None:
            data = names.unpermute(data, rotary_heads)
        is_output = name == "output.weight" or (tied and name == "token_embd.weight")
        tensor_type = (
            getattr(gguf.GGMLQuantizationType, OUTPUT_PRECISION[qtype])
            if (is_output and qtype in OUTPUT_PRECISION)
            else target
        )
        _add_tensor(writer, gguf, name, data.numpy(), tensor_type)
        count += 1
        if progress is not None:
            progress()
    factors = rope_config.llama3_rope_factors(config, head_dim)
    if factors is not None:
        writer.add_tensor("rope_freqs.weight", np.asarray(factors, dtype=np.float32))
    write_metadata(writer, gguf, model_dir, config, qtype)
    kind = write_vocab(writer, model_dir, vocab_size)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": count, "type": qtype, "vocab_size": vocab_size, "tokenizer": kind}


def write_metadata(writer, gguf, model_dir: Path, config: dict, qtype: str) -> None:
    """general.* and llama.* keys, as llama.cpp's converter writes them for a LLaMA folder."""
    total, shared, expert, experts = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, model_dir, None, total)
    if meta.name is None:
        meta.name = model_dir.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, experts)
    generation = model_dir / "generation_config.json"
    if meta.sampling_penalty_repeat is None and generation.is_file():
        meta.sampling_penalty_repeat = read_json(generation).get("repetition_penalty")
    writer.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(writer)
    writer.add_block_count(config["num_hidden_layers"])
    if "max_position_embeddings" in config:
        writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    if "num_key_value_heads" in config:
        writer.add_head_count_kv(config["num_key_value_heads"])
    for method, value in rope_config.gguf_fields(config):
        getattr(writer, method)(value)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    if config.get("head_dim") is not None:
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[qtype]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tensor(writer, gguf, name: str, array: np.ndarray, target) -> None:
    """1-D tensors stay F32; others get `target`, or F16 when their rows do not fill whole blocks."""
    if array.ndim == 1 or target == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, array.astype(np.float32))
        return
    if target == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, array.astype(np.float16))
        return
    block = gguf.GGML_QUANT_SIZES[target][0]
    if array.shape[-1] % block != 0:
        writer.add_tensor(name, array.astype(np.float16))
        return
    quantized = gguf.quants.quantize(array, target)
    writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=target)
