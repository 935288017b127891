"""Bad checkpoints are refused before anything is written: one line `zhllama: error: FILE ...`, exit 2.

Truncated safetensors are refused as the safetensors library refuses them (header offsets checked
against the file size, exact byte counts read); index/config/adapter problems name their file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zhllama.core.checkpoint import safetensors_io
from zhllama.core.errors import UserError


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_base_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer

    out = tmp_path_factory.mktemp("adapter") / "lora"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_base_model))
    peft = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft.save_pretrained(str(out))
    ZhTokenizer(tiny_base_model).save(out)
    return out


def truncate_last_1000(path):
    data = path.read_bytes()
    path.write_bytes(data[:-1000])


def truncate_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def offsets_past_end(path):
    """Keep the file size, but make the header claim a larger last tensor (offsets beyond the end)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    info = header[last]
    info["shape"] = [info["shape"][0] * 2, *info["shape"][1:]]
    size = info["data_offsets"][1] - info["data_offsets"][0]
    info["data_offsets"][1] += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])


CORRUPTIONS = {"last_1000_bytes_cut": truncate_last_1000, "half": truncate_half, "offsets_past_end": offsets_past_end}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_truncated_shard_refused_like_safetensors(tmp_path, tiny_base_model, case):
    shard = tmp_path / "model.safetensors"
    shutil.copyfile(tiny_base_model / "model.safetensors", shard)
    CORRUPTIONS[case](shard)
    with pytest.raises(SafetensorError):  # the reference library refuses the same file
        load_file(str(shard))
    with pytest.raises(UserError, match=rf"^{shard}: not a valid safetensors file"):
        list(safetensors_io.iter_tensors(shard))


def test_reader_equals_safetensors_on_a_valid_file(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.arange(7, dtype=torch.int64),
        "c": torch.randn(2).half(),
        "e": torch.ones(0),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"))
    ours = dict(safetensors_io.iter_tensors(tmp_path / "x.safetensors"))
    assert ours.keys() == tensors.keys() and all(torch.equal(ours[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
@pytest.mark.parametrize("command", ["merge", "gguf"])
def test_commands_refuse_truncated_shards_before_writing(tmp_path, tiny_base_model, adapter, run_cli, case, command):
    model = tmp_path / "model"
    shutil.copytree(tiny_base_model, model)
    CORRUPTIONS[case](model / "model.safetensors")
    before = digest(model)
    out = tmp_path / ("out" if command == "merge" else "out.gguf")
    if command == "merge":
        code, _, err = run_cli("merge", "--base", model, "--lora", adapter, "--output", out)
    else:
        code, _, err = run_cli("quantize", "gguf", "--model", model, "--type", "F16", "--output", out)
    assert code == 2, err
    assert err.count("\n") == 1 and f"{model / 'model.safetensors'}: not a valid safetensors file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and digest(model) == before


def _index_missing_shard(model):
    state = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    keys = sorted(state)
    save_file({k: state[k] for k in keys[:5]}, str(model / "model-00001-of-00002.safetensors"))
    index = {"weight_map": {k: "model-00001-of-00002.safetensors" for k in keys[:5]}}
    index["weight_map"].update({k: "model-00002-of-00002.safetensors" for k in keys[5:]})
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return model / "model.safetensors.index.json", "names shard 'model-00002-of-00002.safetensors'"


def _malformed_config(model):
    (model / "config.json").write_text('{"hidden_size": 64,')
    return model / "config.json", "malformed config.json"


MODEL_CASES = {"index_missing_shard": _index_missing_shard, "malformed_config": _malformed_config}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
@pytest.mark.parametrize("command", ["merge", "gguf"])
def test_bad_model_folders(tmp_path, tiny_base_model, adapter, run_cli, case, command):
    model = tmp_path / "model"
    shutil.copytree(tiny_base_model, model)
    file, message = MODEL_CASES[case](model)
    if command == "merge":
        code, _, err = run_cli("merge", "--base", model, "--lora", adapter, "--output", tmp_path / "out")
    else:
        code, _, err = run_cli("quantize", "gguf", "--model", model, "--output", tmp_path / "out.gguf")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{file}: " in err and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _no_r(folder):
    cfg = json.loads((folder / "adapter_config.json").read_text())
    del cfg["r"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder / "adapter_config.json", "'r' missing or not a positive number"


def _truncated_adapter(folder):
    truncate_half(folder / "adapter_model.safetensors")
    return folder / "adapter_model.safetensors", "not a valid safetensors file"


@pytest.mark.parametrize("edit", [_no_r, _truncated_adapter], ids=["no_r", "truncated"])
def test_bad_adapters(tmp_path, tiny_base_model, adapter, run_cli, edit):
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    file, message = edit(bad)
    code, _, err = run_cli("merge", "--base", tiny_base_model, "--lora", bad, "--output", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{file}: {message}" in err
    assert not (tmp_path / "out").exists()


def test_shard_size_zero_refused(tmp_path, tiny_base_model, adapter, run_cli):
    code, _, err = run_cli(
        "merge", "--base", tiny_base_model, "--lora", adapter, "--output", tmp_path / "o", "--shard-size", "0"
    )
    assert code == 2 and "--shard-size" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["base", "inside_model"])
def test_output_that_is_or_sits_inside_an_input_is_refused_even_with_force(
    tmp_path, tiny_base_model, adapter, run_cli, where
):
    model = tmp_path / "model"
    shutil.copytree(tiny_base_model, model)
    before = digest(model)
    if where == "base":
        code, _, err = run_cli("merge", "--base", model, "--lora", adapter, "--output", model, "--force")
        code2, _, err2 = run_cli("merge", "--base", model, "--lora", adapter, "--output", adapter / "sub", "--force")
    else:
        target = model / "model.safetensors"
        code, _, err = run_cli("quantize", "gguf", "--model", model, "--output", target, "--force")
        code2, _, err2 = run_cli("merge", "--base", model, "--lora", adapter, "--output", model / "merged", "--force")
    for c, e in ((code, err), (code2, err2)):
        assert c == 2 and e.count("\n") == 1 and "would destroy the input" in e, e
    assert digest(model) == before


def test_truncated_bin_shard_refused(tmp_path, tiny_base_model, adapter, run_cli):
    model = tmp_path / "model"
    shutil.copytree(tiny_base_model, model)
    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    truncate_half(model / "pytorch_model.bin")
    code, _, err = run_cli("merge", "--base", model, "--lora", adapter, "--output", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{model / 'pytorch_model.bin'}: cannot be read as a PyTorch checkpoint" in err
    assert not (tmp_path / "out").exists()
