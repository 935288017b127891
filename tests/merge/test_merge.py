"""`zhllama merge` equals PEFT's merge_and_unload, handles chains, shards, .bin, pth, and refuses the unmergeable."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from zhllama.core.checkpoint.pth import read_pth
from zhllama.core.lora_merge import lora_delta, merge
from zhllama.core.tokenizer import ZhTokenizer
from zhllama.core.training.embeddings import padded_size

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base_dir, out, tokenizer_dir, seed, rows=None, **lora_kwargs):
    """A PEFT adapter with random (non-zero) LoRA weights and perturbed full embed/lm_head rows."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if rows is not None:
        model.resize_token_embeddings(rows, mean_resizing=False)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=TARGETS,
        modules_to_save=["embed_tokens", "lm_head"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        **lora_kwargs,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.02)
    peft_model.save_pretrained(str(out))
    ZhTokenizer(tokenizer_dir).save(out)
    return out


def reference_logits(base_dir, adapters, probe):
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    for path in adapters:
        rows = load_file(str(path / "adapter_model.safetensors"))
        embed = next(v for k, v in rows.items() if "embed_tokens" in k and "original_module" not in k)
        if embed.shape[0] != model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(embed.shape[0], mean_resizing=False)
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    with torch.no_grad():
        return model(probe).logits


def merged_logits(folder, probe):
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    with torch.no_grad():
        return model(probe).logits


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_base_model, base_tokenizer, merged_tokenizer):
    root = tmp_path_factory.mktemp("adapters")
    first = make_adapter(tiny_base_model, root / "first", base_tokenizer, seed=1)
    rows = padded_size(len(ZhTokenizer(merged_tokenizer)))
    second = make_adapter(
        tiny_base_model,
        root / "second",
        merged_tokenizer,
        seed=2,
        rows=rows,
        use_rslora=True,
        rank_pattern={"q_proj": 2},
        alpha_pattern={"down_proj": 3},
    )
    return first, second


PROBE = torch.tensor([[1, 5, 17, 42, 99, 300, 7, 8], [1, 250, 3, 4, 120, 64, 33, 2]])


def test_single_adapter_equals_peft(tmp_path, tiny_base_model, adapters):
    first, _ = adapters
    result = merge(tiny_base_model, [first], tmp_path / "m")
    assert result.merged_lora == 2 * len(TARGETS) and result.replaced == 2
    torch.testing.assert_close(
        merged_logits(tmp_path / "m", PROBE), reference_logits(tiny_base_model, [first], PROBE), atol=1e-5, rtol=0
    )
    manifest = json.loads((tmp_path / "m" / "zhllama-merge.json").read_text())
    assert manifest["adapters"][0]["sha256"]["adapter_model.safetensors"]
    assert set(manifest["outputs"]) >= {"model.safetensors", "config.json", "tokenizer.model"}


def test_two_adapter_chain_with_larger_vocab(tmp_path, tiny_base_model, adapters, merged_tokenizer):
    first, second = adapters
    result = merge(tiny_base_model, [first, second], tmp_path / "m", verify=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["vocab_size"] == result.vocab_size == padded_size(len(ZhTokenizer(merged_tokenizer)))
    torch.testing.assert_close(
        merged_logits(tmp_path / "m", PROBE),
        reference_logits(tiny_base_model, [first, second], PROBE),
        atol=1e-5,
        rtol=0,
    )
    assert result.verify_max_abs_diff is not None and result.verify_max_abs_diff < 1e-5
    assert len(ZhTokenizer(tmp_path / "m")) == len(ZhTokenizer(merged_tokenizer))  # last adapter's tokenizer wins


def test_tied_embedding_base_gets_the_adapters_own_lm_head(tmp_path, tiny_base_model, merged_tokenizer):
    """SmolLM2 / Llama-3.2-1B style: the base ties lm_head to embed_tokens (no lm_head tensor on disk),
    while PEFT's modules_to_save trains a separate LM head; the merge writes it and unties."""
    model = AutoModelForCausalLM.from_pretrained(str(tiny_base_model), dtype=torch.float32)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    tied = tmp_path / "tied"
    model.save_pretrained(str(tied))
    shutil.copy(tiny_base_model / "tokenizer.model", tied)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_base_model / name).is_file():
            shutil.copy(tiny_base_model / name, tied)
    assert "lm_head.weight" not in load_file(str(tied / "model.safetensors"))
    rows = padded_size(len(ZhTokenizer(merged_tokenizer)))
    adapter = make_adapter(tied, tmp_path / "adapter", merged_tokenizer, seed=3, rows=rows)

    result = merge(tied, [adapter], tmp_path / "m", verify=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    written = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert (
        written["lm_head.weight"].shape == written["model.embed_tokens.weight"].shape == (rows, config["hidden_size"])
    )
    assert not torch.equal(written["lm_head.weight"], written["model.embed_tokens.weight"])
    torch.testing.assert_close(
        merged_logits(tmp_path / "m", PROBE), reference_logits(tied, [adapter], PROBE), atol=1e-5, rtol=0
    )
    assert result.verify_max_abs_diff is not None and result.verify_max_abs_diff < 1e-5


def test_bin_and_multi_shard_bases_and_output_shards(tmp_path, tiny_base_model, adapters):
    first, _ = adapters
    # transformers 5 only writes safetensors: build the older .bin layout (two shards + index) by hand
    binary = tmp_path / "bin_base"
    shutil.copytree(tiny_base_model, binary)
    state = load_file(str(binary / "model.safetensors"))
    (binary / "model.safetensors").unlink()
    keys = sorted(state)
    halves = {
        "pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
        "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :],
    }
    for name, part in halves.items():
        torch.save({k: state[k] for k in part}, binary / name)
    index = {"metadata": {}, "weight_map": {k: n for n, part in halves.items() for k in part}}
    (binary / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    merge(binary, [first], tmp_path / "from_bin", shard_size="150KB")
    out = tmp_path / "from_bin"
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 1
    reference = tmp_path / "ref"
    merge(tiny_base_model, [first], reference)
    torch.testing.assert_close(merged_logits(out, PROBE), merged_logits(reference, PROBE), atol=0, rtol=0)


def test_dtype_and_cli(tmp_path, tiny_base_model, adapters, run_cli):
    first, _ = adapters
    code, out, err = run_cli(
        "--json", "merge", "--base", tiny_base_model, "--lora", first, "--output", tmp_path / "h", "--dtype", "fp16"
    )
    assert code == 0, err
    assert json.loads(out)["dtype"] == "fp16"
    weights = load_file(str(tmp_path / "h" / "model.safetensors"))
    assert all(t.dtype == torch.float16 for t in weights.values())
    code, _, err = run_cli("merge", "--base", tiny_base_model, "--lora", first, "--output", tmp_path / "h")
    assert code == 2 and "--force" in err


def test_pth_round_trip(tmp_path, tiny_base_model, adapters):
    first, second = adapters
    merge(tiny_base_model, [first, second], tmp_path / "hf")
    merge(tiny_base_model, [first, second], tmp_path / "pth", fmt="pth")
    params = json.loads((tmp_path / "pth" / "params.json").read_text())
    assert params["n_layers"] == 2 and params["n_kv_heads"] == 2
    state, _ = read_pth(tmp_path / "pth")
    hf = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert state.keys() == hf.keys()
    for key in hf:
        assert torch.equal(state[key], hf[key]), key
    meta = torch.load(tmp_path / "pth" / "consolidated.00.pth", weights_only=True)
    assert {
        "tok_embeddings.weight",
        "output.weight",
        "norm.weight",
        "layers.0.attention.wq.weight",
        "layers.1.feed_forward.w2.weight",
        "layers.0.attention_norm.weight",
        "layers.0.ffn_norm.weight",
    } <= set(meta)


def test_fan_in_fan_out_transposes():
    a, b = torch.randn(2, 5), torch.randn(3, 2)
    assert torch.equal(lora_delta(a, b, 2.0, True), ((b @ a) * 2.0).T)


def _copy_adapter(src, dst, edit_config=None, edit_state=None):
    shutil.copytree(src, dst)
    if edit_config:
        cfg = json.loads((dst / "adapter_config.json").read_text())
        edit_config(cfg)
        (dst / "adapter_config.json").write_text(json.dumps(cfg))
    if edit_state:
        state = load_file(str(dst / "adapter_model.safetensors"))
        edit_state(state)
        save_file(state, str(dst / "adapter_model.safetensors"))
    return dst


def _rename(state, old, new):
    for key in [k for k in state if old in k]:
        state[key.replace(old, new)] = state.pop(key)


@pytest.mark.parametrize(
    "case, message",
    [
        ("dora", "DoRA"),
        ("embedding_lora", "LoRA on an embedding without full tensors"),
        ("missing_target", "is not in the base model"),
        ("shape", "shape mismatch"),
        ("vocab_vs_tokenizer", "rows but its tokenizer"),
        ("not_adapter", "not a PEFT adapter folder"),
    ],
)
def test_unmergeable_adapters_stop_before_writing(
    tmp_path, tiny_base_model, adapters, base_tokenizer, run_cli, case, message
):
    first, second = adapters
    bad = tmp_path / "bad"
    if case == "dora":
        _copy_adapter(first, bad, edit_config=lambda c: c.update(use_dora=True))
    elif case == "embedding_lora":
        _copy_adapter(
            first,
            bad,
            edit_state=lambda s: s.update({"base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(4, 10)}),
        )
    elif case == "missing_target":
        _copy_adapter(
            first, bad, edit_state=lambda s: _rename(s, "layers.1.self_attn.q_proj", "layers.7.self_attn.q_proj")
        )
    elif case == "shape":

        def widen(state):
            key = next(k for k in state if k.endswith("layers.0.self_attn.q_proj.lora_A.weight"))
            state[key] = torch.zeros(4, 99)

        _copy_adapter(first, bad, edit_state=widen)
    elif case == "vocab_vs_tokenizer":
        _copy_adapter(second, bad)
        for f in bad.glob("tokenizer*"):
            f.unlink()
        ZhTokenizer(base_tokenizer).save(bad)  # embedding rows of the big vocab, tokenizer of the small one
    else:
        bad.mkdir()
    code, _, err = run_cli("merge", "--base", tiny_base_model, "--lora", bad, "--output", tmp_path / "out")
    assert code == 2, err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
