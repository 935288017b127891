"""Model sources (HF folder, .gguf, hub cache, Meta checkpoint) and `zhllama convert` round trips."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from zhllama.core.checkpoint import names
from zhllama.core.checkpoint.sources import resolve_model
from zhllama.core.errors import UserError

PROBE = torch.tensor([[1, 5, 17, 42, 99, 300, 7, 8, 250, 3]])


def weights(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def logits(folder):
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(PROBE).logits


@pytest.fixture(scope="module")
def scaled_model(tmp_path_factory, tiny_base_model):
    """The tiny base with a 16K-style linear x4 scaling and a longer context in its config."""
    folder = tmp_path_factory.mktemp("scaled") / "model"
    shutil.copytree(tiny_base_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}
    config["max_position_embeddings"] = 8192
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.mark.parametrize("via", ["meta", "tencentpretrain"])
def test_round_trip_is_bit_identical(tmp_path, scaled_model, run_cli, via):
    code, _, err = run_cli("convert", "--from", "hf", "--to", via, "--input", scaled_model, "--output", tmp_path / via)
    assert code == 0, err
    code, out, err = run_cli(
        "--json", "convert", "--from", via, "--to", "hf", "--input", tmp_path / via, "--output", tmp_path / "back"
    )
    assert code == 0, err
    original, back = weights(scaled_model), weights(tmp_path / "back")
    assert original.keys() == back.keys()
    assert all(torch.equal(original[k], back[k]) for k in original)
    torch.testing.assert_close(logits(tmp_path / "back"), logits(scaled_model), rtol=0, atol=0)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    want = json.loads((scaled_model / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
        assert config[key] == want[key], key
    if via == "meta":  # rope scaling and context survive (params.json + zhllama_overrides.json)
        assert config["rope_parameters"]["rope_type"] == "linear" and config["rope_parameters"]["factor"] == 4.0
        assert config["max_position_embeddings"] == 8192
        assert json.loads(out)["rope"].startswith("linear x4")


def test_tencentpretrain_layout_matches_its_conversion_scripts(tmp_path, tiny_base_model):
    from zhllama.core.checkpoint.convert import convert

    convert(tiny_base_model, tmp_path / "tp", src="hf", dst="tencentpretrain")
    state = torch.load(tmp_path / "tp" / "model.bin", weights_only=True)
    hf = weights(tiny_base_model)
    config = json.loads((tmp_path / "tp" / "config.json").read_text())
    assert config["emb_size"] == 64 and config["heads_num"] == 4 and config["local_kv_head_num"] == 2
    assert config["feed_forward"] == "gated" and config["layernorm"] == "rms"
    assert torch.equal(state["embedding.word.embedding.weight"], hf["model.embed_tokens.weight"])
    assert torch.equal(state["target.lm.output_layer.weight"], hf["lm_head.weight"])
    assert torch.equal(state["encoder.layer_norm.weight"], hf["model.norm.weight"])
    assert torch.equal(
        state["encoder.transformer.1.feed_forward.linear_1.weight"], hf["model.layers.1.mlp.up_proj.weight"]
    )
    # q/k in Meta's rotary layout: TencentPretrain's own unpermute (w.reshape(h, 2, d/h/2, d).transpose(1, 2))
    q = hf["model.layers.0.self_attn.q_proj.weight"]
    expected = q.reshape(4, 2, 64 // 4 // 2, 64).transpose(1, 2).reshape(64, 64)
    assert torch.equal(state["encoder.transformer.0.self_attn.linear_layers.0.weight"], expected)


@pytest.fixture(scope="module")
def meta_two_shards(tmp_path_factory, tiny_base_model):
    """A Meta checkpoint split into two model-parallel shards by hand, as Meta's 13B layout is."""
    folder = tmp_path_factory.mktemp("meta") / "13B"
    folder.mkdir()
    hf = weights(tiny_base_model)
    config = json.loads((tiny_base_model / "config.json").read_text())
    shards = [{}, {}]
    for key, tensor in hf.items():
        name = names.to_format(key, "meta")
        if key.endswith("q_proj.weight"):
            tensor = tensor.view(4, 2, 8, 64).transpose(1, 2).reshape(64, 64)
        elif key.endswith("k_proj.weight"):
            tensor = tensor.view(2, 2, 8, 64).transpose(1, 2).reshape(32, 64)
        kind = name.split(".")[-2]
        dim = (
            0
            if kind in ("wq", "wk", "wv", "w1", "w3", "output")
            else 1
            if kind in ("tok_embeddings", "wo", "w2")
            else None
        )
        for i in range(2):
            shards[i][name] = tensor.clone() if dim is None else tensor.chunk(2, dim=dim)[i].clone()
    for i, shard in enumerate(shards):
        torch.save(shard, folder / f"consolidated.{i:02d}.pth")
    params = {
        "dim": 64,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 2,
        "norm_eps": config["rms_norm_eps"],
        "vocab_size": -1,
    }
    (folder / "params.json").write_text(json.dumps(params))
    shutil.copyfile(tiny_base_model / "tokenizer.model", folder.parent / "tokenizer.model")  # Meta's download layout
    return folder


def test_meta_folder_resolves_once_into_a_cached_hf_folder(tmp_path, meta_two_shards, tiny_base_model, monkeypatch):
    monkeypatch.setenv("ZHLLAMA_CACHE", str(tmp_path / "cache"))
    first = resolve_model(meta_two_shards)
    assert first.parent == tmp_path / "cache" / "converted"
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(str(meta_two_shards)) == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    original = weights(tiny_base_model)
    assert all(torch.equal(weights(first)[k], original[k]) for k in original)
    torch.testing.assert_close(logits(first), logits(tiny_base_model), rtol=0, atol=0)


def test_merge_accepts_a_meta_base(tmp_path, meta_two_shards, tiny_base_model, run_cli, monkeypatch):
    from peft import LoraConfig, get_peft_model

    monkeypatch.setenv("ZHLLAMA_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_base_model)),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False),
    )
    peft.save_pretrained(str(tmp_path / "lora"))
    shutil.copyfile(tiny_base_model / "tokenizer.model", tmp_path / "lora" / "tokenizer.model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_base_model / name, tmp_path / "lora" / name)
    code, _, err = run_cli("merge", "--base", meta_two_shards, "--lora", tmp_path / "lora", "--output", tmp_path / "a")
    assert code == 0, err
    code, _, err = run_cli("merge", "--base", tiny_base_model, "--lora", tmp_path / "lora", "--output", tmp_path / "b")
    assert code == 0, err
    assert all(torch.equal(v, weights(tmp_path / "b")[k]) for k, v in weights(tmp_path / "a").items())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hub_cache(root, repo: str, files: dict[str, bytes], commit: str, ref: str = "main"):
    """A cache folder exactly as huggingface_hub writes it: blobs by hash, refs, snapshot symlinks."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo_dir / "blobs" / _sha(data)
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


def test_hub_ids_resolve_offline_through_the_cache(tmp_path, tiny_base_model, monkeypatch):
    from huggingface_hub import constants

    files = {p.name: p.read_bytes() for p in tiny_base_model.iterdir() if p.is_file()}
    main = hub_cache(tmp_path / "hub", "hfl/tiny-llama", files, "a" * 40)
    tagged = hub_cache(tmp_path / "hub", "hfl/tiny-llama", files, "b" * 40, ref="v1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_model("hfl/tiny-llama") == main
    assert resolve_model("hfl/tiny-llama@v1") == tagged
    assert resolve_model("hfl/tiny-llama@" + "a" * 40) == main
    torch.testing.assert_close(logits(main), logits(tiny_base_model), rtol=0, atol=0)
    with pytest.raises(
        UserError, match=r"^hfl/unknown: no such folder, and not in the Hugging Face cache .* with HF_HUB_OFFLINE set"
    ):
        resolve_model("hfl/unknown")


def test_gguf_and_hf_folders_are_returned_as_is(tmp_path, tiny_base_model):
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))  # a valid, empty GGUF header
    assert resolve_model(tmp_path / "m.gguf") == tmp_path / "m.gguf"
    assert resolve_model(tiny_base_model) == tiny_base_model
    with pytest.raises(UserError, match="GGUF file; this command needs an HF model folder"):
        resolve_model(tmp_path / "m.gguf", folder_only=True)


def _bad_params(folder):
    params = json.loads((folder / "params.json").read_text())
    params["n_layers"] = 3
    (folder / "params.json").write_text(json.dumps(params))
    return folder / "params.json", "n_layers 3, checkpoint has 2 layers"


def _no_dim(folder):
    (folder / "params.json").write_text(json.dumps({"n_layers": 2, "n_heads": 4}))
    return folder / "params.json", "'dim' missing"


def _missing_shard(folder):
    shutil.copyfile(folder / "consolidated.01.pth", folder / "consolidated.02.pth")
    (folder / "consolidated.01.pth").unlink()
    return folder / "consolidated.01.pth", "shard missing"


def _no_tokenizer(folder):
    (folder.parent / "tokenizer.model").unlink()
    return folder / "tokenizer.model", "missing"


@pytest.mark.parametrize("edit", [_bad_params, _no_dim, _missing_shard, _no_tokenizer])
def test_bad_meta_folders_name_the_file(tmp_path, meta_two_shards, run_cli, monkeypatch, edit):
    monkeypatch.setenv("ZHLLAMA_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "ckpt" / "13B"
    shutil.copytree(meta_two_shards.parent, folder.parent)
    file, message = edit(folder)
    code, _, err = run_cli("convert", "--from", "meta", "--input", folder, "--output", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{file}: " in err and message in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match=str(file)):
        resolve_model(folder)
