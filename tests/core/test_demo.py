"""`zhllama demo` end to end (reduced steps): every artifact loads in its ecosystem's own reader, each
stage's size is its artifact's, and the final chat answer is the merged model's own greedy answer
(the start of what plain transformers decodes greedily from the llama2-zh prompt the chat command uses)."""

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
    for name, artifact in (("pretrain", "pt_lora"), ("sft", "sft_lora"), ("dpo", "dpo_lora")):
        assert stages[name]["bytes"] == sum(f.stat().st_size for f in (work / artifact).rglob("*") if f.is_file())
        assert json.loads((work / artifact / "train_summary.json").read_text())["kind"] == name
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
    assert chat["prompt"] == "熊猫最喜欢吃什么？"
    _check_answer(work / "merged_model", chat)


def _check_answer(model_dir, chat) -> None:
    """The chat stage's answer is the start of greedy decoding by transformers' own `generate`."""
    import torch
    from transformers import AutoModelForCausalLM

    from zhllama.core.templates import Message, encode, get_template
    from zhllama.core.tokenizer import ZhTokenizer

    tok = ZhTokenizer(model_dir)
    segments = get_template("llama2-zh").segments([Message("user", chat["prompt"])], add_generation_prompt=True)
    ids = encode(tok, segments)[0]
    assert chat["usage"]["prompt_tokens"] == len(ids)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=48, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id
        )
    greedy = tok.decode([int(t) for t in out[0, len(ids) :] if int(t) != tok.eos_id])
    # the chat stops early at the template's stop text or EOS: its answer is the start of the same greedy text
    assert chat["answer"].strip() and greedy.startswith(chat["answer"]), (chat["answer"], greedy)
    assert chat["usage"]["completion_tokens"] <= 48
