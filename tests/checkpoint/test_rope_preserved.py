"""The model's rope scaling survives every write: merge (hf, pth), adapter overrides, GGUF."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from zhllama.core.lora_merge import merge

LINEAR4 = {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}


@pytest.fixture(scope="module")
def scaled_base(tmp_path_factory, tiny_base_model):
    folder = tmp_path_factory.mktemp("base") / "m"
    shutil.copytree(tiny_base_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(rope_parameters=LINEAR4, max_position_embeddings=8192)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def lora(tmp_path_factory, tiny_base_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer

    out = tmp_path_factory.mktemp("lora") / "a"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_base_model))
    get_peft_model(
        model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False)
    ).save_pretrained(str(out))
    ZhTokenizer(tiny_base_model).save(out)
    return out


def with_overrides(src, dst, overrides):
    shutil.copytree(src, dst)
    (dst / "zhllama_overrides.json").write_text(json.dumps({"config": overrides}))
    return dst


def test_merge_keeps_the_base_scaling_in_hf_and_pth(tmp_path, scaled_base, lora):
    merge(scaled_base, [lora], tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["rope_parameters"] == LINEAR4 and config["max_position_embeddings"] == 8192
    assert "linear x4" in json.loads((tmp_path / "hf" / "zhllama-merge.json").read_text())["rope"]
    merge(scaled_base, [lora], tmp_path / "pth", fmt="pth")
    params = json.loads((tmp_path / "pth" / "params.json").read_text())
    assert "rope_theta" not in params and "use_scaled_rope" not in params  # Meta's fields stay Meta's
    overrides = json.loads((tmp_path / "pth" / "zhllama_overrides.json").read_text())["config"]
    assert overrides == {"rope_parameters": LINEAR4, "max_position_embeddings": 8192}


def test_llama3_and_theta_go_into_meta_params(tmp_path, scaled_base, lora):
    base = tmp_path / "b"
    shutil.copytree(scaled_base, base)
    config = json.loads((base / "config.json").read_text())
    llama3 = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config.update(rope_parameters=llama3, max_position_embeddings=2048)
    (base / "config.json").write_text(json.dumps(config))
    merge(base, [lora], tmp_path / "pth", fmt="pth")
    params = json.loads((tmp_path / "pth" / "params.json").read_text())
    assert params["rope_theta"] == 500000.0 and params["use_scaled_rope"] is True
    # Meta's code fixes llama3 scaling at factor 8: Llama 3.2's 32 needs the overrides file
    overrides = json.loads((tmp_path / "pth" / "zhllama_overrides.json").read_text())["config"]
    assert overrides["rope_parameters"] == llama3
    from zhllama.core.checkpoint.convert import convert

    back = convert(tmp_path / "pth", tmp_path / "back", src="meta", dst="hf")
    assert back["rope"].startswith("llama3 x32")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["rope_parameters"] == llama3


def test_adapter_overrides_apply_in_order_and_reach_the_gguf(tmp_path, scaled_base, lora):
    from gguf import GGUFReader

    from zhllama.core.quantize.gguf_export import write_gguf

    yarn = {"type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192}
    first = with_overrides(lora, tmp_path / "first", {"rope_scaling": yarn, "max_position_embeddings": 16384})
    pi = {"rope_type": "linear", "factor": 8.0}
    second = with_overrides(lora, tmp_path / "second", {"rope_scaling": pi, "max_position_embeddings": 32768})
    merge(scaled_base, [first], tmp_path / "one", verify=True)
    config = json.loads((tmp_path / "one" / "config.json").read_text())
    assert config["rope_parameters"] == {
        "rope_type": "yarn",
        "factor": 2.0,
        "original_max_position_embeddings": 8192,
        "rope_theta": 10000.0,
    }
    assert config["max_position_embeddings"] == 16384 and "rope_scaling" not in config
    result = merge(scaled_base, [first, second], tmp_path / "two", verify=True)
    assert result.verify_max_abs_diff < 1e-5
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["rope_parameters"] == {"rope_type": "linear", "factor": 8.0, "rope_theta": 10000.0}
    assert config["max_position_embeddings"] == 32768
    write_gguf(tmp_path / "two", tmp_path / "two.gguf", "F16")
    fields = GGUFReader(str(tmp_path / "two.gguf")).fields
    assert bytes(fields["llama.rope.scaling.type"].parts[-1]).decode() == "linear"
    assert float(fields["llama.rope.scaling.factor"].parts[-1][0]) == 8.0
    assert int(fields["llama.context_length"].parts[-1][0]) == 32768


def test_bad_overrides_file_is_refused(tmp_path, scaled_base, lora, run_cli):
    bad = with_overrides(lora, tmp_path / "bad", {"rope_scaling": {"type": "linear", "factor": 2}, "hidden_size": 8})
    code, _, err = run_cli("merge", "--base", scaled_base, "--lora", bad, "--output", tmp_path / "out")
    assert code == 2 and f"{bad / 'zhllama_overrides.json'}: unsupported config override 'hidden_size'" in err
    assert not (tmp_path / "out").exists()
