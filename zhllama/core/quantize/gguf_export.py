"""Write a llama.cpp GGUF file straight from an HF LLaMA checkpoint with the `gguf` package.

The vocabulary is copied exactly from the SentencePiece model: pieces, scores and token types
(normal / unknown / control / user-defined / byte), BOS/EOS/UNK/PAD ids, and padded with
`[PADn]` entries up to the model's `vocab_size` when the embedding was padded (as llama.cpp's
converter does). q/k projections are un-permuted back to Meta's rotary layout, which llama.cpp
expects. Tensors whose row length is not a multiple of the quant block fall back to F16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from zhllama.core.checkpoint import names
from zhllama.core.checkpoint.shards import iter_model
from zhllama.core.errors import UserError

TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
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


def sentencepiece_vocab(model_dir: Path, vocab_size: int):
    """(tokens, scores, types, special ids) from tokenizer.model, padded to `vocab_size`."""
    from zhllama.core import spm

    if not (model_dir / "tokenizer.model").is_file():
        raise UserError(
            f"{model_dir}: no tokenizer.model; only SentencePiece (LLaMA-family) vocabularies are "
            "written to GGUF by zhllama"
        )
    proto = spm.load_proto(model_dir / "tokenizer.model")
    if proto.trainer_spec.model_type != spm.BPE:
        raise UserError(
            f"{model_dir / 'tokenizer.model'}: not a BPE SentencePiece model; llama.cpp's 'llama' "
            "tokenizer cannot represent it"
        )
    if len(proto.pieces) > vocab_size:
        raise UserError(f"{model_dir}: tokenizer has {len(proto.pieces)} pieces but the model only {vocab_size} rows")
    tokens = [p.piece.encode("utf-8") for p in proto.pieces]
    scores = [float(p.score) for p in proto.pieces]
    types = [int(p.type) for p in proto.pieces]  # sentencepiece's type numbers equal gguf.TokenType's
    for i in range(1, vocab_size - len(proto.pieces) + 1):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(5)  # UNUSED
    special = {name: spm.special_id(proto, name) for name in ("bos", "eos", "unk", "pad")}
    config_file = model_dir / "tokenizer_config.json"
    if special["pad"] is None and config_file.is_file():
        pad = json.loads(config_file.read_text()).get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        ids = spm.piece_ids(proto)
        special["pad"] = ids.get(pad) if pad else None
    return tokens, scores, types, special, proto.normalizer_spec.add_dummy_prefix


def byte_level_bpe_vocab(model_dir: Path, vocab_size: int):
    """GPT-2-style byte-level BPE (tokenizer.json) as llama.cpp's 'gpt2' tokenizer: tokens, merges, types."""
    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(data.get("pre_tokenizer")):
        raise UserError(
            f"{model_dir / 'tokenizer.json'}: only byte-level BPE or SentencePiece vocabularies can be written to GGUF"
        )
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= vocab_size:
        raise UserError(f"{model_dir}: tokenizer has ids up to {max(by_id)} but the model only {vocab_size} rows")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]".encode())
            types.append(5)  # UNUSED
            continue
        tokens.append(by_id[i].encode("utf-8"))
        types.append((3 if added[i].get("special") else 4) if i in added else 1)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def write_vocab(writer, model_dir: Path, vocab_size: int) -> None:
    """SentencePiece vocabularies as llama.cpp's 'llama' tokenizer, byte-level BPE as 'gpt2'."""
    if (model_dir / "tokenizer.model").is_file():
        tokens, scores, types, special, dummy_prefix = sentencepiece_vocab(model_dir, vocab_size)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_add_space_prefix(bool(dummy_prefix))
    elif (model_dir / "tokenizer.json").is_file():
        from zhllama.core.tokenizer import ZhTokenizer

        tokens, types, merges = byte_level_bpe_vocab(model_dir, vocab_size)
        tok = ZhTokenizer(model_dir)
        special = {"bos": tok.bos_id, "eos": tok.eos_id, "unk": tok.unk_id, "pad": tok._hf_id("pad")}
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
    else:
        raise UserError(f"{model_dir}: no tokenizer.model or tokenizer.json to write the GGUF vocabulary from")
    for name, idx in special.items():
        if idx is not None:
            getattr(writer, f"add_{name}_token_id")(idx)
    writer.add_add_bos_token((model_dir / "tokenizer.model").is_file())
    writer.add_add_eos_token(False)


def write_gguf(model_dir: str | Path, output: Path, qtype: str = "F16", progress=None) -> dict:
    """Convert `model_dir` into the GGUF file `output` (a path that the caller renames into place)."""
    import gguf

    model_dir = Path(model_dir)
    qtype = qtype.upper()
    if qtype not in TYPES:
        raise UserError(f"--type: '{qtype}' is not one of {', '.join(TYPES)} (K-quants need the llamacpp extra)")
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise UserError(f"{model_dir}: not a model folder (no config.json)")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "llama":
        raise UserError(f"{model_dir}: architecture '{config.get('model_type')}' is not supported (llama only)")
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    vocab_size = config["vocab_size"]

    writer = gguf.GGUFWriter(str(output), "llama")
    writer.add_name(model_dir.name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // heads)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    rope = config.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[qtype]))
    write_vocab(writer, model_dir, vocab_size)

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
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": count, "type": qtype, "vocab_size": vocab_size}


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
