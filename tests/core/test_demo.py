"""`zhllama demo` end to end (reduced steps): every artifact loads in its ecosystem's own reader."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_pipeline_artifacts_load(run_cli, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = tmp_path / "demo"
    code, out, err = run_cli("--json", "demo", "--workdir", work, "--steps", "3", "--sft-steps", "3")
    assert code == 0, err
    result = json.loads(out)
    stages = {s["stage"]: s for s in result["stages"]}
    for name in ("vocab train", "vocab merge", "pretrain", "sft"):
        assert stages[name]["bytes"] > 0
    tok = AutoTokenizer.from_pretrained(str(work / "merged_tokenizer"))
    assert tok("中文")["input_ids"][0] == tok.bos_token_id
    base = AutoModelForCausalLM.from_pretrained(str(work / "base_model"))
    adapter_cfg = json.loads((work / "sft_lora" / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA"
    summary = json.loads((work / "sft_lora" / "train_summary.json").read_text())
    base.resize_token_embeddings(summary["vocab_size"], mean_resizing=False)
    model = PeftModel.from_pretrained(base, str(work / "sft_lora"))
    assert model.get_input_embeddings().weight.shape[0] == summary["vocab_size"]
    merged = AutoModelForCausalLM.from_pretrained(str(work / "merged_model"))
    assert merged.config.vocab_size == summary["vocab_size"]
    merge_manifest = json.loads((work / "merged_model" / "zhllama-merge.json").read_text())
    assert merge_manifest["verify_max_abs_diff"] < 1e-4
    aligned = PeftModel.from_pretrained(merged, str(work / "dpo_lora"))  # the DPO stage's adapter on the SFT model
    assert json.loads((work / "dpo_lora" / "train_summary.json").read_text())["kind"] == "dpo"
    assert aligned.peft_config["default"].peft_type == "LORA"
    from gguf import GGUFReader

    reader = GGUFReader(str(work / "model-q8_0.gguf"))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "llama"
    ceval = json.loads((work / "ceval" / "summary.json").read_text())
    assert ceval["overall"]["total"] == 24
    chat = json.loads((work / "chat.json").read_text())
    assert chat["prompt"] == "熊猫最喜欢吃什么？" and isinstance(chat["answer"], str)
