"""The one model-loading layer: option spellings, device/dtype decisions, CPU-safe 4-bit, GPU placement."""

from __future__ import annotations

import pytest

from zhllama.core.errors import UserError
from zhllama.core.loading.device import plan_placement
from zhllama.core.loading.options import ModelOptions, parse_dtype


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("fp16", "float16"),
        ("float16", "float16"),
        ("half", "float16"),
        ("FP16", "float16"),
        ("bf16", "bfloat16"),
        ("bfloat16", "bfloat16"),
        ("fp32", "float32"),
        ("float32", "float32"),
        ("auto", None),
        (None, None),
    ],
)
def test_every_dtype_spelling_means_the_same(spelling, expected):
    assert parse_dtype(spelling) == expected


def test_unknown_dtype_names_the_option_and_suggests():
    with pytest.raises(UserError, match=r"--dtype value 'bf61'.*did you mean 'bf16'"):
        parse_dtype("bf61")


@pytest.mark.parametrize(
    ("request_", "cuda_count", "bf16", "expected"),
    [
        (("auto", None), 0, False, ("cpu", None, "float32")),
        (("cpu", None), 2, True, ("cpu", None, "float32")),
        (("cpu", "bfloat16"), 0, False, ("cpu", None, "bfloat16")),
        (("auto", None), 1, True, ("cuda:0", {"": 0}, "bfloat16")),
        (("auto", None), 1, False, ("cuda:0", {"": 0}, "float16")),
        (("cuda", "float32"), 1, True, ("cuda:0", {"": 0}, "float32")),
        (("auto", None), 4, True, ("cuda:0", "auto", "bfloat16")),
        (("cuda:1", None), 2, True, ("cuda:1", {"": 1}, "bfloat16")),
    ],
)
def test_placement_decisions(request_, cuda_count, bf16, expected):
    where = plan_placement(*request_, cuda_count=cuda_count, bf16_supported=bf16)
    assert (where.device, where.device_map, where.dtype) == expected


@pytest.mark.parametrize(
    ("request_", "cuda_count", "bf16", "message"),
    [
        (("cuda", None), 0, False, "--device cuda: no CUDA GPU"),
        (("cuda:2", None), 2, True, r"--device cuda:2: only 2 GPU\(s\)"),
        (("cuda", "bfloat16"), 1, False, "--dtype bf16: this GPU does not support bfloat16"),
    ],
)
def test_impossible_placements_are_user_errors(request_, cuda_count, bf16, message):
    with pytest.raises(UserError, match=message):
        plan_placement(*request_, cuda_count=cuda_count, bf16_supported=bf16)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device", "gpu", "--device: 'gpu'"),
        ("load", "3bit", "--load value '3bit'"),
        ("attn", "flash", "--attn value 'flash'"),
        ("rope_scaling", "ntkk", "--rope-scaling value 'ntkk'.*did you mean 'ntk'"),
        ("context_length", 0, "--context-length: must be at least 1"),
        ("gpu_layers", "most", "--gpu-layers: 'most'"),
        ("threads", 0, "--threads: must be at least 1"),
        ("model", " ", "--model: missing"),
    ],
)
def test_model_options_are_validated_before_loading(field, value, message):
    options = ModelOptions(**{"model": "m", field: value})
    with pytest.raises(UserError, match=message):
        options.validated()


def test_validated_options_are_canonical():
    options = ModelOptions(model="m", device="CUDA:0", dtype="half", lora=["a", "b"]).validated()
    assert (options.device, options.dtype, [str(p) for p in options.lora]) == ("cuda:0", "float16", ["a", "b"])


def test_flash_attention_without_the_package_is_a_clear_error(tiny_zh_model):
    from zhllama.core.engine import open_model
    from zhllama.core.registry import missing_modules

    if not missing_modules(("flash_attn",)):
        pytest.skip("flash-attn is installed")
    with pytest.raises(UserError, match="--attn flash_attention_2: needs the flash-attn package"):
        open_model(ModelOptions(model=str(tiny_zh_model), attn="flash_attention_2", device="cpu"))


def test_eager_and_sdpa_attention_give_the_same_logits(tiny_zh_model):
    from zhllama.core.engine import open_model

    ids = [[1, 5, 9, 30, 41]]
    sdpa = open_model(ModelOptions(model=str(tiny_zh_model), attn="sdpa")).next_token_logits(ids)
    eager = open_model(ModelOptions(model=str(tiny_zh_model), attn="eager")).next_token_logits(ids)
    assert (sdpa - eager).abs().max().item() < 1e-4


def test_odd_layer_sizes_load_in_4bit_on_cpu_with_a_warning(tmp_path, merged_tokenizer, capsys):
    """Odd widths (176) stay in full precision on every CPU, named in a warning; the rest is 4-bit."""
    pytest.importorskip("bitsandbytes")
    import torch

    from zhllama.core.engine import open_model
    from zhllama.core.tiny import TinyShape, build_tiny_llama

    odd = build_tiny_llama(tmp_path / "odd", tokenizer=merged_tokenizer, shape=TinyShape(intermediate_size=176))
    full = open_model(ModelOptions(model=str(odd), device="cpu"))
    quant = open_model(ModelOptions(model=str(odd), device="cpu", load="4bit"))
    layer = quant.model.model.layers[0]
    for odd_layer in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):  # out 176, out 176, in 176
        assert type(odd_layer) is torch.nn.Linear
    assert type(layer.self_attn.q_proj).__name__ == "Linear4bit"
    err = capsys.readouterr().err
    assert "kept in float32: mlp.gate_proj (x2), mlp.up_proj (x2), mlp.down_proj (x2)" in err
    assert "q_proj" not in err
    ids = [[1, 5, 9, 30, 41]]
    got, ref = quant.next_token_logits(ids)[0], full.next_token_logits(ids)[0]
    assert torch.isfinite(got).all() and 0 < (got - ref).abs().max().item() < 1.0


@pytest.mark.gpu
def test_gpu_placement_and_dtype_by_default(tiny_zh_model):
    import torch

    from zhllama.core.engine import open_model

    gpu = open_model(ModelOptions(model=str(tiny_zh_model)))
    cpu = open_model(ModelOptions(model=str(tiny_zh_model), device="cpu"))
    weight = gpu.model.get_input_embeddings().weight
    assert weight.device.type == "cuda"
    assert weight.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    ids = [[1, 5, 9, 30, 41], [1, 7]]
    assert (gpu.next_token_logits(ids).cpu() - cpu.next_token_logits(ids)).abs().max().item() < 0.1


@pytest.mark.gpu
def test_gpu_4bit_load(tiny_zh_model):
    pytest.importorskip("bitsandbytes")
    from zhllama.core.engine import open_model

    quant = open_model(ModelOptions(model=str(tiny_zh_model), load="4bit"))
    assert type(quant.model.model.layers[0].mlp.gate_proj).__name__ == "Linear4bit"
    assert quant.next_token_logits([[1, 5, 9]]).isfinite().all()


@pytest.mark.gpu
def test_generation_paths_run_on_the_gpu(tiny_zh_model):
    """Sampling (penalty, seeded draw), CFG, batched predict, embeddings and prefix reuse with the model on CUDA."""
    from zhllama.core.engine import GenerationParams, open_model
    from zhllama.core.generation.batch import _batched
    from zhllama.core.generation.embeddings import embed
    from zhllama.core.generation.guidance import Guidance
    from zhllama.core.generation.loop import decode
    from zhllama.core.generation.sampling import Sampler

    model = open_model(ModelOptions(model=str(tiny_zh_model)))
    ids = [1, 5, 9, 30, 41]
    params = GenerationParams(max_new_tokens=8, temperature=0.8, repetition_penalty=1.3, seed=1)
    assert list(model.generate(ids, params)) == list(model.generate(ids, params))
    cfg = Sampler(params, pre=(Guidance(1.5, (1, 7, 8)).processor(model),))
    assert len(list(decode(model.session(), model.tokenizer, ids, params, sampler=cfg))) > 0
    assert len(_batched(model, [ids, ids[:2]], [params, params])) == 2
    assert len(embed(model, [ids, ids[:2]])) == 2
    together = model.next_token_logits_with_prefix(ids[:3], [ids[3:], ids[4:]])
    alone = model.next_token_logits([ids, ids[:3] + ids[4:]])
    assert (together - alone).abs().max().item() < 0.1
