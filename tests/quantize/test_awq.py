"""AWQ through llm-compressor, when it is installed (`pip install 'zhllama[awq]'` + llmcompressor --no-deps)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import shared
from zhllama.core.assets import data_path
from zhllama.core.tiny import TinyShape, build_tiny_llama

pytest.importorskip("llmcompressor", reason="llm-compressor not installed (see plugins/quantizers/awq.py)")

PROBE = torch.tensor([[1, 5, 17, 42, 99, 300, 7, 8, 1000, 1100]])


def _check_compressed(out, bits: int, group: int) -> None:
    """The compressed-tensors layout vLLM reads: packed int32 weights, one scale per group."""
    from safetensors import safe_open

    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    weights = config["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (bits, group, True)
    assert config["ignore"] == ["lm_head"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor("model.layers.0.mlp.down_proj.weight_packed")
        scale = f.get_tensor("model.layers.0.mlp.down_proj.weight_scale")
        shape = f.get_tensor("model.layers.0.mlp.down_proj.weight_shape").tolist()
    assert "model.layers.0.mlp.down_proj.weight" not in keys
    assert packed.dtype == torch.int32 and packed.shape == (shape[0], shape[1] * bits // 32)
    assert scale.shape == (shape[0], shape[1] // group)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # AWQ's grid search on CPU: ~4 min on 2 busy cores
def test_awq_tiny_model_loads_with_transformers_close_to_fp32(tmp_path, merged_tokenizer, run_cli, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # DeepSpeed (via save_pretrained below) would print its guess

    model = build_tiny_llama(tmp_path / "m", tokenizer=merged_tokenizer, shape=TinyShape(intermediate_size=192))
    out = tmp_path / "awq"
    code, stdout, err = run_cli(
        "--json",
        "quantize",
        "awq",
        "--model",
        model,
        "--group-size",
        "32",
        "--samples",
        "16",
        "--max-length",
        "64",
        "--output",
        out,
        "--eval-ppl",
        data_path("corpus_zh.txt"),
        "--ppl-context",
        "128",
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["method"] == "awq" and report["ratio"] < 0.9
    assert report["ppl_after"] == pytest.approx(report["ppl_before"], rel=0.05)
    _check_compressed(out, 4, 32)
    ref = AutoModelForCausalLM.from_pretrained(str(model)).eval()
    back = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        expected, got = ref(PROBE).logits, back(PROBE).logits
    assert not torch.equal(got, expected)  # really quantized
    assert (got - expected).abs().max() < 0.2 * expected.abs().max()
    # the loaded weights are exactly the packed 4-bit integers times their group's scale
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        packed = f.get_tensor("model.layers.1.mlp.down_proj.weight_packed")
        scale = f.get_tensor("model.layers.1.mlp.down_proj.weight_scale").float()
    nibbles = torch.stack([(packed >> (4 * i)) & 0xF for i in range(8)], dim=-1).reshape(packed.shape[0], -1)
    assert int(nibbles.min()) >= 0 and int(nibbles.max()) <= 15
    weight = (nibbles - 8).float() * scale.repeat_interleave(32, dim=1)
    x = torch.randn(3, weight.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(back.model.layers[1].mlp.down_proj(x), x @ weight.T, atol=1e-6)


def test_awq_bad_input(tmp_path, tiny_zh_model, run_cli):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    cases = [
        (["--bits", "3"], "--bits: 3 is not 4 or 8"),
        (
            ["--group-size", "128"],
            "--group-size 128: does not divide the 192 in-features of model.layers.0.mlp.down_proj.weight",
        ),
        (["--calibration", empty], "empty"),
        (["--samples", "0"], "--samples: 0 must be at least 1"),
        (["--n-grid", "1"], "--n-grid: 1 must be at least 2"),
    ]
    for extra, message in cases:
        code, _, err = run_cli("quantize", "awq", "--model", tiny_zh_model, *extra, "--output", tmp_path / "out")
        assert code == 2 and err.count("\n") == 1 and message in err, err
        assert not (tmp_path / "out").exists()


def _rtn_ppl(model, out, data) -> float:
    """The reference: the same scheme (W4A16 g64 symmetric) by round-to-nearest alone (no AWQ scales)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    from zhllama.core.perplexity import perplexity
    from zhllama.core.tokenizer import ZhTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=64)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    oneshot(model=loaded, recipe=[QuantizationModifier(ignore=["lm_head"], config_groups={"group_0": scheme})])
    loaded.save_pretrained(str(out), save_compressed=True)
    ZhTokenizer(model).save(out)
    return perplexity(out, data, context=512, tokenizer=model, backend="transformers").perplexity


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_awq_smollm2_perplexity(tmp_path, smollm2_folder_real, run_cli):
    """The real 135M model: W4A16 g64 (576 = 9 x 64) loads with transformers; its PPL is between the
    unquantized model's and that of round-to-nearest with the same scheme (AWQ's scales help).

    Measured (8 Wikipedia lines, context 512, transformers): fp32 16.302, AWQ 23.263, RTN 25.762; the
    test took 2.4 min on 2 quiet CPU cores (AWQ's grid search: 16 x 128 tokens, 10 ratios, 30 layers).
    """
    from transformers import AutoModelForCausalLM

    corpus = shared("corpus", "zh_wiki_cmrc2018_contexts.txt")
    data = tmp_path / "wiki.txt"
    data.write_text("\n".join(corpus.read_text(encoding="utf-8").splitlines()[:8]), encoding="utf-8")
    out = tmp_path / "awq"
    code, stdout, err = run_cli(
        "--json", "quantize", "awq", "--model", smollm2_folder_real, "--group-size", "64",
        "--samples", "16", "--max-length", "128", "--n-grid", "10",
        "--output", out, "--eval-ppl", data, "--ppl-context", "512",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(stdout)
    _check_compressed(out, 4, 64)
    back = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        assert torch.isfinite(back(PROBE).logits).all()
    rtn = _rtn_ppl(smollm2_folder_real, tmp_path / "rtn", data)
    print(f"SmolLM2-135M W4A16 g64 PPL: fp32 {report['ppl_before']:.3f}, AWQ {report['ppl_after']:.3f}, RTN {rtn:.3f}")
    assert report["ppl_before"] < report["ppl_after"] < rtn
