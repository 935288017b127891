"""The transformers engine against transformers itself: logits, batching, generation, LoRA, 4-bit."""

from __future__ import annotations

import pytest
import torch

from zhllama.core.engine import GenerationParams, choose_engine, open_model
from zhllama.core.errors import UserError
from zhllama.core.loading import ModelOptions

TEXTS = ["你好，世界", "the quick brown fox jumps over the lazy dog", "中文", "a"]


def _reference_logits(hf_model, ids):
    with torch.no_grad():
        return hf_model(torch.tensor([ids])).logits[0, -1].float()


def test_choose_engine(tiny_zh_model, tmp_path):
    assert choose_engine(tiny_zh_model) == "transformers"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert choose_engine(gguf) == "llamacpp"
    assert choose_engine(tiny_zh_model, "vllm") == "vllm"
    with pytest.raises(UserError, match="no engine accepts"):
        choose_engine(tmp_path)


def test_next_token_logits_batched_equals_single(zh_model):
    tok = zh_model.tokenizer
    seqs = [tok.encode(t, bos=True) for t in TEXTS]
    assert len({len(s) for s in seqs}) > 1  # padding really happens
    batched = zh_model.next_token_logits(seqs)
    assert batched.shape == (len(seqs), len(tok)) and batched.dtype == torch.float32
    for row, seq in enumerate(seqs):
        single = zh_model.next_token_logits([seq])[0]
        assert (batched[row] - single).abs().max().item() < 1e-4
        assert (single - _reference_logits(zh_model.model, seq)).abs().max().item() < 1e-5


def test_generate_greedy_equals_hf_generate(zh_model):
    ids = zh_model.tokenizer.encode("你好", bos=True)
    params = GenerationParams(max_new_tokens=12, greedy=True, repetition_penalty=1.1)
    ours = list(zh_model.generate(ids, params))
    with torch.no_grad():
        ref = zh_model.model.generate(
            torch.tensor([ids]), max_new_tokens=12, do_sample=False, repetition_penalty=1.1, eos_token_id=None
        )
    assert ours == ref[0, len(ids) :].tolist()[: len(ours)]
    assert len(ours) == 12 or ref[0, len(ids) + len(ours)].item() == zh_model.tokenizer.eos_id


def test_generate_sampling_is_seeded(zh_model):
    ids = zh_model.tokenizer.encode("你好", bos=True)
    a = list(zh_model.generate(ids, GenerationParams(max_new_tokens=8, temperature=1.0, seed=3)))
    b = list(zh_model.generate(ids, GenerationParams(max_new_tokens=8, temperature=1.0, seed=3)))
    c = list(zh_model.generate(ids, GenerationParams(max_new_tokens=8, temperature=1.0, seed=4)))
    assert a == b and a != c


def test_generate_stops_at_eos_id(zh_model):
    ids = zh_model.tokenizer.encode("你好", bos=True)
    greedy = list(zh_model.generate(ids, GenerationParams(max_new_tokens=6, greedy=True)))
    # declaring the 3rd greedy token a stop id ends generation right before it
    stopped = list(zh_model.generate(ids, GenerationParams(max_new_tokens=6, greedy=True, stop_token_ids=(greedy[2],))))
    assert stopped == greedy[:2]


def test_lora_is_applied(tiny_zh_model, zh_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_zh_model)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    ids = zh_model.tokenizer.encode("你好", bos=True)
    with torch.no_grad():
        expected = peft_model(torch.tensor([ids])).logits[0, -1]
    loaded = open_model(ModelOptions(model=str(tiny_zh_model), lora=[str(tmp_path / "lora")]))
    got = loaded.next_token_logits([ids])[0]
    assert (got - expected).abs().max().item() < 1e-4
    assert (got - zh_model.next_token_logits([ids])[0]).abs().max().item() > 1e-3


@pytest.mark.parametrize(("load", "layer"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_load_runs_close_to_fp32(tiny_zh_model, zh_model, load, layer):
    model = open_model(ModelOptions(model=str(tiny_zh_model), load=load))
    assert type(model.model.model.layers[0].self_attn.q_proj).__name__ == layer
    ids = zh_model.tokenizer.encode("你好", bos=True)
    got = model.next_token_logits([ids])[0]
    ref = zh_model.next_token_logits([ids])[0]
    assert torch.isfinite(got).all() and 0 < (got - ref).abs().max().item() < 1.0


def test_lora_on_a_4bit_model_stays_an_adapter(tiny_zh_model, zh_model, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_zh_model)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_alpha=64)
    get_peft_model(base, config).save_pretrained(tmp_path / "lora")
    ids = zh_model.tokenizer.encode("你好", bos=True)
    plain4 = open_model(ModelOptions(model=str(tiny_zh_model), load="4bit")).next_token_logits([ids])[0]
    with_lora = open_model(ModelOptions(model=str(tiny_zh_model), load="4bit", lora=[str(tmp_path / "lora")]))
    assert isinstance(with_lora.model, PeftModel)
    fp32_lora = open_model(ModelOptions(model=str(tiny_zh_model), lora=[str(tmp_path / "lora")])).next_token_logits(
        [ids]
    )[0]
    got = with_lora.next_token_logits([ids])[0]
    assert (got - plain4).abs().max() > 3 * (got - fp32_lora).abs().max()  # the adapter's effect survives 4-bit


def test_bad_inputs_are_user_errors(tiny_zh_model, tmp_path):
    with pytest.raises(UserError, match="no such model folder or file"):
        open_model(tmp_path / "nope")
    with pytest.raises(UserError, match="adapter_config.json"):
        open_model(ModelOptions(model=str(tiny_zh_model), lora=[str(tmp_path)]))
    with pytest.raises(UserError, match="--load"):
        open_model(ModelOptions(model=str(tiny_zh_model), load="3bit"))


def test_plugin_listing_names_what_each_engine_needs(run_cli):
    import json

    from zhllama.core.registry import missing_modules

    code, out, _ = run_cli("--json", "plugins")
    engines = {p["name"]: p for p in json.loads(out)["plugins"] if p["group"] == "zhllama.engines"}
    assert code == 0 and set(engines) == {"transformers", "llamacpp", "vllm"}
    assert engines["transformers"]["available"] and engines["transformers"]["load_error"] is None
    assert engines["vllm"]["requires"] == ["vllm"] and "zhllama[vllm]" in engines["vllm"]["install_hint"]
    assert engines["vllm"]["missing"] == list(missing_modules(("vllm",)))
    assert (
        engines["llamacpp"]["requires"] == ["llama_cpp"] and "zhllama[llamacpp]" in engines["llamacpp"]["install_hint"]
    )
