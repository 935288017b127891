"""GGUF metadata equals what llama.cpp's own `convert_hf_to_gguf.py` writes for the same folder.

The expected tables were written from the converter's behaviour (llama.cpp as vendored by
llama-cpp-python 0.3.36, run on these very fixtures): rope scaling keys (linear, YaRN; llama3 as a
`rope_freqs.weight` tensor), `general.*`, tokenizer kind and pre-tokenizer, special ids and flags,
added tokens (`added_tokens.json` -> USER_DEFINED), `[PAD<id>]` padding, chat template.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import pytest

from zhllama.core.quantize.gguf_export import write_gguf
from zhllama.core.tiny import TinyShape, build_tiny_llama

SHAPE = TinyShape(
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)


def gguf_fields(path) -> tuple[dict, dict]:
    """Scalar/string keys as values, arrays as (length, first 3, last 3); tensors: name -> (type, shape)."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        if field.types[0] == GGUFValueType.ARRAY:
            if field.types[-1] == GGUFValueType.STRING:
                values = [bytes(field.parts[i]).decode() for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            out[name] = (len(values), values[:3], values[-3:])
        elif field.types[0] == GGUFValueType.STRING:
            out[name] = bytes(field.parts[-1]).decode()
        else:
            out[name] = field.parts[-1].tolist()[0]
    tensors = {t.name: (t.tensor_type.name, [int(d) for d in t.shape]) for t in reader.tensors}
    return out, tensors


def model_with(root, name, tokenizer, rope=None, context=None, vocab_size=None, shape=SHAPE):
    folder = build_tiny_llama(root / name, tokenizer=tokenizer, vocab_size=vocab_size, shape=shape, seed=0)
    config = json.loads((folder / "config.json").read_text())
    if rope is not None:
        config["rope_parameters"] = rope
    if context is not None:
        config["max_position_embeddings"] = context
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


# keys every tiny LLaMA fixture shares (hidden 64, 2 layers, 4 heads / 2 kv heads, F16)
COMMON = {
    "general.architecture": "llama",
    "general.type": "model",
    "general.quantization_version": 2,
    "general.file_type": 1,
    "llama.block_count": 2,
    "llama.embedding_length": 64,
    "llama.feed_forward_length": 192,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 2,
    "llama.attention.key_length": 16,
    "llama.attention.value_length": 16,
    "llama.attention.layer_norm_rms_epsilon": pytest.approx(1e-6),
    "llama.rope.dimension_count": 16,
}
SPM = {
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.pre": "default",
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.unknown_token_id": 0,
    "tokenizer.ggml.add_bos_token": True,
    "tokenizer.ggml.add_eos_token": False,
    "tokenizer.ggml.add_sep_token": False,
}


def check(fields: dict, expected: dict) -> None:
    assert {k: fields.get(k, "<missing>") for k in expected} == expected


def test_linear_x4_keys(tmp_path, base_tokenizer):
    model = model_with(tmp_path, "lin", base_tokenizer, {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}, 256)
    write_gguf(model, tmp_path / "m.gguf", "F16")
    fields, tensors = gguf_fields(tmp_path / "m.gguf")
    expected = {
        **COMMON,
        **SPM,
        "general.name": "Lin",
        "general.size_label": "150K",
        "llama.context_length": 256,
        "llama.rope.freq_base": 10000.0,
        "llama.rope.scaling.type": "linear",
        "llama.rope.scaling.factor": 4.0,
        "llama.vocab_size": 400,
        "tokenizer.ggml.tokens": (400, ["<unk>", "<s>", "</s>"], fields["tokenizer.ggml.tokens"][2]),
        "tokenizer.ggml.token_type": (400, [2, 3, 3], [1, 1, 1]),
    }
    check(fields, expected)
    assert set(fields) == set(expected) | {"tokenizer.ggml.scores"}
    assert "rope_freqs.weight" not in tensors and len(tensors) == 21


def test_yarn_keys(tmp_path, base_tokenizer):
    rope = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4, "original_max_position_embeddings": 64}
    write_gguf(model_with(tmp_path, "yarn", base_tokenizer, rope, 256), tmp_path / "m.gguf", "F16")
    fields, _ = gguf_fields(tmp_path / "m.gguf")
    check(
        fields,
        {
            "llama.context_length": 256,
            "llama.rope.scaling.type": "yarn",
            "llama.rope.scaling.factor": 4.0,
            "llama.rope.scaling.original_context_length": 64,
            "llama.rope.freq_base": 10000.0,
        },
    )
    rope.update(beta_fast=16.0, beta_slow=2.0, attention_factor=1.25)
    write_gguf(model_with(tmp_path, "yarn2", base_tokenizer, rope, 256), tmp_path / "m2.gguf", "F16")
    fields, _ = gguf_fields(tmp_path / "m2.gguf")
    check(
        fields,
        {
            "llama.rope.scaling.yarn_beta_fast": 16.0,
            "llama.rope.scaling.yarn_beta_slow": 2.0,
            "llama.rope.scaling.yarn_attn_factor": 1.25,
        },
    )


def test_llama3_scaling_is_a_rope_freqs_tensor_and_dynamic_has_no_keys(tmp_path, base_tokenizer):
    rope = {
        "rope_type": "llama3",
        "factor": 8.0,
        "rope_theta": 500000.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    write_gguf(model_with(tmp_path, "l3", base_tokenizer, rope, 256), tmp_path / "m.gguf", "F16")
    fields, tensors = gguf_fields(tmp_path / "m.gguf")
    assert "llama.rope.scaling.type" not in fields and fields["llama.rope.freq_base"] == 500000.0
    assert tensors["rope_freqs.weight"] == ("F32", [8])
    from gguf import GGUFReader

    got = next(t for t in GGUFReader(str(tmp_path / "m.gguf")).tensors if t.name == "rope_freqs.weight").data
    # Meta's llama3 rule written out: wavelengths above old/low get the factor, below old/high none,
    # in between a smooth interpolation
    expected = []
    for i in range(8):
        wavelen = 2 * math.pi * 500000.0 ** (2 * i / 16)
        if wavelen < 32 / 4:
            expected.append(1.0)
        elif wavelen > 32 / 1:
            expected.append(8.0)
        else:
            smooth = (32 / wavelen - 1) / (4 - 1)
            expected.append(1 / ((1 - smooth) / 8 + smooth))
    assert list(got) == pytest.approx(expected, rel=1e-5)
    dynamic = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}
    write_gguf(model_with(tmp_path, "dyn", base_tokenizer, dynamic), tmp_path / "d.gguf", "F16")
    fields, tensors = gguf_fields(tmp_path / "d.gguf")
    assert not any(k.startswith("llama.rope.scaling") for k in fields) and "rope_freqs.weight" not in tensors


def test_added_tokens_json_is_user_defined_and_padding_named_by_id(tmp_path, base_tokenizer):
    """Chinese-Alpaca's layout: tokenizer.model + added_tokens.json {"[PAD]": n}; model padded further."""
    model = model_with(tmp_path, "alpaca", base_tokenizer, vocab_size=403)
    (model / "added_tokens.json").write_text(json.dumps({"[PAD]": 400}))
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "pad_token_id": 400}))
    write_gguf(model, tmp_path / "m.gguf", "F16")
    fields, _ = gguf_fields(tmp_path / "m.gguf")
    check(
        fields,
        {
            "llama.vocab_size": 403,
            "tokenizer.ggml.tokens": (403, ["<unk>", "<s>", "</s>"], ["[PAD]", "[PAD401]", "[PAD402]"]),
            "tokenizer.ggml.token_type": (403, [2, 3, 3], [4, 5, 5]),
            "tokenizer.ggml.scores": (403, [0.0, 0.0, 0.0], [-1000.0, -10000.0, -10000.0]),
            "tokenizer.ggml.padding_token_id": 400,
        },
    )


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory, smollm2_gguf):
    """SmolLM2's tokenizer (byte-level BPE, ChatML template) as transformers rebuilds it, on a tiny LLaMA."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("smol")
    tok_dir = root / "tokenizer"
    AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name).save_pretrained(str(tok_dir))
    model = build_tiny_llama(root / "smol", tokenizer=tok_dir, shape=replace(SHAPE, tie_word_embeddings=True), seed=0)
    shutil.copyfile(tok_dir / "chat_template.jinja", model / "chat_template.jinja")
    return model


def test_byte_level_bpe_keys_equal_llama_cpp_converter(tmp_path, smollm2_folder):
    write_gguf(smollm2_folder, tmp_path / "m.gguf", "F16")
    fields, tensors = gguf_fields(tmp_path / "m.gguf")
    template = (smollm2_folder / "chat_template.jinja").read_text()
    expected = {
        **COMMON,
        "general.name": "Smol",
        "general.size_label": "3.2M",
        "llama.context_length": 64,
        "llama.rope.freq_base": 10000.0,
        "llama.vocab_size": 49152,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": (
            49152,
            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            ["Ġexfol", "ĠMama", "ectable"],
        ),
        "tokenizer.ggml.token_type": (49152, [3, 3, 3], [1, 1, 1]),
        "tokenizer.ggml.merges": (48900, ["Ġ t", "Ġ a", "i n"], ["Ġex fol", "ĠM ama", "ect able"]),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.padding_token_id": 2,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": template,
    }
    check(fields, expected)
    assert set(fields) == set(expected)
    assert "output.weight" not in tensors  # tied


def test_unknown_bpe_pre_tokenizer_is_refused_before_writing(tmp_path, smollm2_folder, run_cli):
    from zhllama.core.quantize import gguf_vocab
    from zhllama.core.quantize.llama_cpp_pre import PRE_TOKENIZERS

    folder = tmp_path / "model"
    shutil.copytree(smollm2_folder, folder)
    saved = dict(PRE_TOKENIZERS)
    PRE_TOKENIZERS.clear()
    try:
        code, _, err = run_cli("quantize", "gguf", "--model", folder, "--type", "F16", "--output", tmp_path / "o.gguf")
    finally:
        PRE_TOKENIZERS.update(saved)
    assert code == 2 and "does not know this BPE pre-tokenizer" in err and err.count("\n") == 1
    assert not (tmp_path / "o.gguf").exists() and gguf_vocab is not None
