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
    return model / "config.json", "config.json: not valid JSON (line 1, column 20: Expecting property name"


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


# ---- one validation step for every loading path (issue 24 point 1) -------------------------------
from zhllama.core.checkpoint import validate  # noqa: E402


class _Mkdir:
    """A pickled object whose loading would create a folder: evidence that pickle code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def evil_pickle(path, marker):
    torch.save({"weight": torch.zeros(2), "payload": _Mkdir(marker)}, path)


def test_refused_pickle_is_one_line_naming_file_why_and_what_to_do(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "adapter_model.bin"
    evil_pickle(evil, marker)
    with pytest.raises(UserError) as info:
        validate.load_pickle(evil)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{evil}: refused by torch.load(weights_only=True)")
    assert "mkdir" in message and "safetensors" in message
    assert not marker.exists()  # nothing ran


def test_pickles_of_plain_tensors_pass_in_zip_and_legacy_format(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)}
    torch.save(state, tmp_path / "zip.bin")
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    for name in ("zip.bin", "legacy.bin"):
        assert validate.check_pickle(tmp_path / name) == {"a", "b"}
        loaded = validate.load_pickle(tmp_path / name)
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save([torch.ones(1)], tmp_path / "list.bin")
    with pytest.raises(UserError, match=r"list\.bin: not a flat dict of tensors"):
        validate.check_pickle(tmp_path / "list.bin")


def _sharded(model, names=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")):
    """Split model.safetensors into two shards plus an index; returns the index dict."""
    state = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    keys = sorted(state)
    half = len(keys) // 2
    parts = {names[0]: keys[:half], names[1]: keys[half:]}
    for name, part in parts.items():
        save_file({k: state[k] for k in part}, str(model / name))
    index = {"metadata": {}, "weight_map": {k: name for name, part in parts.items() for k in part}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return index


def test_sharded_folder_passes_and_index_entries_must_stay_inside(tmp_path, tiny_base_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_base_model, model)
    index = _sharded(model)
    assert validate.validate_model_dir(model) == model
    # an entry naming a file outside the folder: refused, even though the file exists and is valid
    outside = tmp_path / "x.safetensors"
    shutil.move(model / "model-00002-of-00002.safetensors", outside)
    index["weight_map"] = {
        k: ("../x.safetensors" if v == "model-00002-of-00002.safetensors" else v)
        for k, v in index["weight_map"].items()
    }
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"names '\.\./x\.safetensors', which resolves to .*outside the model folder"):
        validate.validate_model_dir(model)
    # a shard that is a symlink out of the folder: refused too; one pointing inside is fine
    (model / "model-00002-of-00002.safetensors").symlink_to(outside)
    index["weight_map"] = {
        k: ("model-00002-of-00002.safetensors" if v.startswith("..") else v) for k, v in index["weight_map"].items()
    }
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=r"outside the model folder"):
        validate.validate_model_dir(model)
    (model / "model-00002-of-00002.safetensors").unlink()
    shutil.move(outside, model / "real.safetensors")
    (model / "model-00002-of-00002.safetensors").symlink_to("real.safetensors")
    assert validate.validate_model_dir(model) == model


def test_index_tensor_must_be_in_the_shard_it_names(tmp_path, tiny_base_model):
    model = tmp_path / "model"
    shutil.copytree(tiny_base_model, model)
    index = _sharded(model)
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "model-00002-of-00002.safetensors"
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match=rf"tensor '{first}' is not in model-00002-of-00002\.safetensors"):
        validate.validate_model_dir(model)


def test_hub_cache_snapshot_symlinks_into_blobs_are_inside(tmp_path, tiny_base_model):
    repo = tmp_path / "models--org--tiny"
    snap, blobs = repo / "snapshots" / "abc", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for file in tiny_base_model.iterdir():
        shutil.copyfile(file, blobs / file.name)
        (snap / file.name).symlink_to(f"../../blobs/{file.name}")
    assert validate.validate_model_dir(snap) == snap


def test_safetensors_of_any_format_dtype_pass_validation(tmp_path):
    path = tmp_path / "fp8.safetensors"
    save_file({"w": torch.zeros(4, 8, dtype=torch.float8_e4m3fn), "u": torch.zeros(3, dtype=torch.uint16)}, str(path))
    assert validate.check_safetensors(path) == {"w", "u"}
    with pytest.raises(UserError, match="has unsupported dtype '(F8_E4M3|U16)'"):  # merge's own reader still refuses
        safetensors_io.read_header(path)


def test_adapter_validation(tmp_path, adapter):
    assert validate.validate_adapter_dir(adapter) == adapter
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    (bad / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError, match=r"bad: no adapter_model\.safetensors or adapter_model\.bin"):
        validate.validate_adapter_dir(bad)
    evil_pickle(bad / "adapter_model.bin", tmp_path / "pwned")
    with pytest.raises(UserError, match=r"adapter_model\.bin: refused by torch\.load\(weights_only=True\)"):
        validate.validate_adapter_dir(bad)
    with pytest.raises(UserError, match=r"nothing: no such adapter folder"):
        validate.validate_adapter_dir(tmp_path / "nothing")
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_dir_validation(tmp_path, adapter):
    ckpt = tmp_path / "checkpoint-2"
    shutil.copytree(adapter, ckpt)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": []}))
    torch.save(
        {"state": {0: {"step": torch.tensor(2.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        ckpt / "optimizer.pt",
    )
    torch.save({"python": 1, "torch": torch.get_rng_state()}, ckpt / "rng_state.pth")
    assert validate.validate_checkpoint_dir(ckpt) == ckpt
    (ckpt / "trainer_state.json").write_text('{"global_step": ')
    with pytest.raises(UserError, match=r"trainer_state\.json: not valid JSON \(line 1, column 17: Expecting value\)$"):
        validate.validate_checkpoint_dir(ckpt)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    evil_pickle(ckpt / "optimizer.pt", tmp_path / "pwned")
    with pytest.raises(UserError, match=r"optimizer\.pt: refused by torch\.load"):
        validate.validate_checkpoint_dir(ckpt)
    assert not (tmp_path / "pwned").exists()


def _tiny_gguf(tmp_path, tiny_base_model, run_cli):
    out = tmp_path / "m.gguf"
    code, _, err = run_cli("quantize", "gguf", "--model", tiny_base_model, "--type", "Q8_0", "--output", out)
    assert code == 0, err
    return out


def test_gguf_header_validation(tmp_path, tiny_base_model, run_cli):
    gguf_file = _tiny_gguf(tmp_path, tiny_base_model, run_cli)
    assert validate.validate_gguf(gguf_file) == gguf_file
    data = gguf_file.read_bytes()
    cases = {
        "cut.gguf": (data[:-100], r"ends at byte \d+, past the end of the file .*truncated"),
        "head.gguf": (data[:4000], r"runs past the end of the file|past the end of the file"),
        "magic.gguf": (b"GGML" + data[4:], r"no GGUF magic"),
        "version.gguf": (data[:4] + struct.pack("<I", 7) + data[8:], r"version 7"),
        "tiny.gguf": (b"GGUF", r"4 bytes; truncated"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=rf"{name}: not a valid GGUF file \(.*{message}"):
            validate.validate_gguf(tmp_path / name)


def test_ggml_block_table_matches_gguf_py():
    gguf = pytest.importorskip("gguf")
    sizes = {int(kind): tuple(value) for kind, value in gguf.GGML_QUANT_SIZES.items()}
    # Q8_1 (9): ggml's block_q8_1 is 2 halves + 32 bytes = 36 (ggml_type_size); gguf-py still says 40.
    # It is an intermediate type that no GGUF file stores.
    ours = {k: v for k, v in validate.GGML_BLOCKS.items() if k != 9}
    assert {k: v for k, v in sizes.items() if k in ours} == ours
    assert set(sizes) <= set(validate.GGML_BLOCKS) | {4, 5}  # 4/5: Q4_2/Q4_3, removed from ggml
