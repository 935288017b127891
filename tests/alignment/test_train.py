"""rm / dpo / ppo on tiny models: accuracy, margins and reward rise; outputs reload; resume is bit-exact."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from zhllama.core.alignment import data, dpo, ppo, rm
from zhllama.core.alignment.config import DpoConfig, PpoConfig, RmConfig
from zhllama.core.templates import get_template
from zhllama.core.tokenizer import ZhTokenizer

PNG = b"\x89PNG\r\n\x1a\n"


def _sequence_logps(model, prompt: list[int], answer: list[int]) -> float:
    """log p(answer | prompt) under a causal LM, computed directly."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1)
    targets = ids[0, 1:]
    token_logps = logps.gather(1, targets[:, None])[:, 0]
    return float(token_logps[len(prompt) - 1 :].sum())


def test_dpo_raises_margin_on_training_pairs(tmp_path, tiny_base_model, base_tokenizer, separable_pairs, align_cfg):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = align_cfg(DpoConfig, tiny_base_model, separable_pairs, max_steps=8, per_device_train_batch_size=4, beta=0.1)
    summary = dpo(cfg)
    assert summary["steps"] == 8 and summary["loss_type"] == "sigmoid"
    assert summary["first_reward_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    assert summary["final_reward_margin"] > 0.1
    for name in ("loss.png", "rewards.png"):
        assert (cfg.output / name).read_bytes().startswith(PNG)
    assert json.loads((cfg.output / "train_summary.json").read_text())["steps"] == 8

    # independent check: the DPO implicit-reward margin, from log-probs computed here
    columns, _ = data.preference_examples(
        ZhTokenizer(base_tokenizer), get_template("none"), data.read_pairs([separable_pairs]), 64, None
    )
    reference = AutoModelForCausalLM.from_pretrained(str(tiny_base_model)).eval()
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_base_model)), str(cfg.output))
    policy.eval()
    margins = []
    for p, c, r in zip(columns["prompt_ids"], columns["chosen_ids"], columns["rejected_ids"], strict=True):
        chosen = _sequence_logps(policy, p, c) - _sequence_logps(reference, p, c)
        rejected = _sequence_logps(policy, p, r) - _sequence_logps(reference, p, r)
        margins.append(0.1 * (chosen - rejected))
    assert sum(m > 0 for m in margins) == len(margins)
    assert sum(margins) / len(margins) > 0.1


def test_rm_separates_pairs_and_reloads(tmp_path, tiny_base_model, separable_pairs, align_cfg):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    cfg = align_cfg(
        RmConfig, tiny_base_model, separable_pairs, max_steps=30, per_device_train_batch_size=4, validation_split=0.2
    )
    summary = rm(cfg)
    assert summary["accuracy_on"] == "validation" and summary["eval_pairs"] == 4
    assert summary["accuracy"] > 0.9
    assert (cfg.output / "accuracy.png").read_bytes().startswith(PNG)
    adapter = json.loads((cfg.output / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]

    # the output loads as a sequence-classification model (base + adapter) and ranks every pair
    base = AutoModelForSequenceClassification.from_pretrained(adapter["base_model_name_or_path"], num_labels=1)
    model = PeftModel.from_pretrained(base, str(cfg.output)).eval()
    tok = ZhTokenizer(cfg.output)
    columns = data.reward_examples(
        data.preference_examples(tok, get_template("none"), data.read_pairs([separable_pairs]), 64, None)[0]
    )
    with torch.no_grad():
        for chosen, rejected in zip(columns["chosen_ids"], columns["rejected_ids"], strict=True):
            assert model(torch.tensor([chosen])).logits.item() > model(torch.tensor([rejected])).logits.item()


def test_full_rm_loads_with_auto_class(tmp_path, tiny_base_model, separable_pairs, align_cfg):
    from transformers import AutoModelForSequenceClassification

    cfg = align_cfg(RmConfig, tiny_base_model, separable_pairs, full=True, max_steps=20, learning_rate=1e-4)
    summary = rm(cfg)
    assert summary["accuracy"] > 0.9
    model = AutoModelForSequenceClassification.from_pretrained(str(cfg.output)).eval()
    assert model.config.num_labels == 1 and model.config.pad_token_id == ZhTokenizer(cfg.output).pad_id


def test_rm_adapter_merges(tmp_path, run_cli, tiny_base_model, separable_pairs, align_cfg):
    """The merged reward model loads as a sequence classifier and scores as base + adapter (PEFT)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    cfg = align_cfg(RmConfig, tiny_base_model, separable_pairs, max_steps=2)
    rm(cfg)
    merged = tmp_path / "m"
    code, _, stderr = run_cli("merge", "--base", tiny_base_model, "--lora", cfg.output, "--output", merged, "--verify")
    assert code == 0, stderr
    ours = AutoModelForSequenceClassification.from_pretrained(str(merged))
    assert ours.config.architectures == ["LlamaForSequenceClassification"] and ours.config.num_labels == 1
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_base_model), num_labels=1)
    base.config.pad_token_id = ours.config.pad_token_id
    ref = PeftModel.from_pretrained(base, str(cfg.output)).merge_and_unload()
    ids = torch.tensor([[1, 17, 42, 99, 7]])
    with torch.no_grad():
        assert (ours(ids).logits - ref(ids).logits).abs().max().item() < 1e-4


def target_reward_model(out, base_model, tokenizer_dir, target: int):
    """A reward model that scores how close the last token is to `target`: sqrt(d) * cos(e_last, e_target).

    Attention and MLP outputs are zeroed, so the final hidden state is the normalised embedding of the
    last token; the score head is the unit vector of the target's embedding.
    """
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(base_model), num_labels=1)
    tok = ZhTokenizer(tokenizer_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        model.score.weight.copy_(embed[target] / embed[target].norm())
    model.config.pad_token_id = tok.pad_id
    model.save_pretrained(str(out))
    tok.save(out)
    return model


def test_ppo_reward_rises_and_policy_merges(tmp_path, run_cli, tiny_base_model, base_tokenizer, align_cfg):
    tok = ZhTokenizer(base_tokenizer)
    target = tok.encode("the")[-1]
    scorer = target_reward_model(tmp_path / "rm", tiny_base_model, base_tokenizer, target)
    with torch.no_grad():  # the reward model does what it says: the target as last token scores sqrt(64)
        assert scorer(torch.tensor([[5, 9, target]])).logits.item() == pytest.approx(8.0, rel=1e-2)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Tell me something ({i})"}) for i in range(4)) + "\n")
    cfg = align_cfg(
        PpoConfig,
        tiny_base_model,
        prompts,
        reward_model=tmp_path / "rm",
        max_steps=24,
        per_device_train_batch_size=2,
        num_generations=4,
        max_completion_length=3,
        learning_rate=2e-2,
        kl_coef=0.01,
    )
    summary = ppo(cfg)
    assert summary["algorithm"] == "rloo" and summary["steps"] == 24
    saved = json.loads((cfg.output / "train_summary.json").read_text())
    assert saved["final_reward"] == summary["final_reward"]
    rewards = [value for _, value in saved["curves"]["reward"]]
    assert len(rewards) == 24
    early, late = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert late > early + 0.5, (early, late)
    assert any(value != 0 for _, value in saved["curves"]["kl"])
    for name in ("reward.png", "kl.png", "loss.png"):
        assert (cfg.output / name).read_bytes().startswith(PNG)

    # the policy adapter merges with `zhllama merge`, equal to PEFT's own merge
    code, _, stderr = run_cli(
        "merge", "--base", tiny_base_model, "--lora", cfg.output, "--output", tmp_path / "merged", "--verify"
    )
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "merged" / "zhllama-merge.json").read_text())
    assert manifest["verify_max_abs_diff"] < 1e-4


@pytest.mark.parametrize("kind", ["dpo", "rm", "ppo"])
def test_resume_is_bit_exact(kind, tmp_path, tiny_base_model, separable_pairs, align_cfg):
    common = dict(
        max_steps=4,
        save_steps=2,
        per_device_train_batch_size=2,
        lr_scheduler_type="cosine",
        warmup_ratio=0.2,
        lora_dropout=0.05,
    )
    task, cls = {"dpo": (dpo, DpoConfig), "rm": (rm, RmConfig), "ppo": (ppo, PpoConfig)}[kind]
    if kind == "ppo":
        target_reward_model(tmp_path / "scorer", tiny_base_model, tiny_base_model, 5)
        common.update(reward_model=tmp_path / "scorer", max_completion_length=3)
    straight = align_cfg(cls, tiny_base_model, separable_pairs, output=tmp_path / "a", **common)
    task(straight)
    interrupted = align_cfg(cls, tiny_base_model, separable_pairs, output=tmp_path / "b", **common)
    task(interrupted)
    # simulate a kill after step 2: only checkpoint-2 survives, no final artifacts
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "checkpoint-4")
    for p in (tmp_path / "b").iterdir():
        if p.name != "checkpoints":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    resumed = align_cfg(cls, tiny_base_model, separable_pairs, output=tmp_path / "b", resume=True, **common)
    summary = task(resumed)
    assert summary["steps"] == 4
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    saved = json.loads((tmp_path / "a" / "train_summary.json").read_text())
    assert (
        json.loads(json.dumps(summary["curves"])) == saved["curves"]
    )  # the whole curve, restored from the checkpoint's log


def test_qlora_dpo_rm_ppo(tmp_path, tiny_base_model, base_tokenizer, separable_pairs, align_cfg):
    """--qlora 4 trains LoRA on a bitsandbytes 4-bit base for all three (trainable heads kept in fp32),
    and each learns its signal: dpo's reward margin, rm's pairwise ranking, ppo's reward."""
    pytest.importorskip("bitsandbytes")
    from zhllama.core.alignment.tasks import RewardModelScorer, load_reward_model

    common = dict(qlora=4, per_device_train_batch_size=4)
    summary = dpo(
        align_cfg(DpoConfig, tiny_base_model, separable_pairs, output=tmp_path / "dpo", max_steps=8, **common)
    )
    assert summary["steps"] == 8 and summary["first_reward_margin"] == pytest.approx(0.0, abs=1e-3)  # 4-bit noise
    assert summary["final_reward_margin"] > 0.05
    adapter = load_file(tmp_path / "dpo" / "adapter_model.safetensors")
    assert any("lora_A" in k for k in adapter) and not any(".ref." in k for k in adapter)

    summary = rm(align_cfg(RmConfig, tiny_base_model, separable_pairs, output=tmp_path / "rm", max_steps=30, **common))
    assert summary["steps"] == 30 and summary["accuracy"] > 0.9 and summary["margin"] > 0
    accuracy = [value for _, value in summary["curves"]["accuracy"]]  # pairwise accuracy per training step
    assert len(accuracy) == 30 and all(0 <= a <= 1 for a in accuracy)
    assert min(accuracy[-10:]) >= 0.75, accuracy  # ranks (nearly) every batch by the end (here: all 1.0 from step 2)
    assert "score" in json.loads((tmp_path / "rm" / "adapter_config.json").read_text())["modules_to_save"]
    # scored here (the adapter on the full-precision base), it ranks the chosen answer above the rejected one
    tok = ZhTokenizer(tmp_path / "rm")
    scorer = RewardModelScorer(load_reward_model(tmp_path / "rm", tok, torch.float32), tok.pad_id, {"": []})
    columns = data.reward_examples(
        data.preference_examples(tok, get_template("none"), data.read_pairs([separable_pairs]), 64, None)[0]
    )
    chosen = scorer([""] * len(columns["chosen_ids"]), None, columns["chosen_ids"])
    rejected = scorer([""] * len(columns["rejected_ids"]), None, columns["rejected_ids"])
    assert sum(c > r for c, r in zip(chosen, rejected, strict=True)) >= 0.9 * len(chosen)

    target = ZhTokenizer(base_tokenizer).encode("the")[-1]
    target_reward_model(tmp_path / "scorer", tiny_base_model, base_tokenizer, target)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Tell me something ({i})"}) for i in range(4)) + "\n")
    cfg = align_cfg(
        PpoConfig,
        tiny_base_model,
        prompts,
        output=tmp_path / "ppo",
        reward_model=tmp_path / "scorer",
        qlora=4,
        max_steps=24,
        per_device_train_batch_size=2,
        num_generations=4,
        max_completion_length=3,
        learning_rate=2e-2,
        kl_coef=0.01,
    )
    summary = ppo(cfg)
    rewards = [value for _, value in summary["curves"]["reward"]]
    kl = [value for _, value in summary["curves"]["kl"]]
    assert summary["steps"] == 24 and len(rewards) == len(kl) == 24
    assert all(math.isfinite(v) for v in rewards + kl)
    early, late = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert late > early + 0.5, (early, late)
    assert (summary["first_reward"], summary["final_reward"]) == (rewards[0], rewards[-1])
    # the first completions come from the reference policy itself (LoRA starts at zero): no KL yet;
    # the reward is bought by moving away from it
    assert summary["first_kl"] == kl[0] == pytest.approx(0.0, abs=1e-3)
    assert sum(kl[-6:]) / 6 > sum(kl[:6]) / 6, kl


@pytest.mark.slow
def test_dpo_deepspeed_zero3_without_launcher(tmp_path, tiny_base_model, separable_pairs):
    """`--deepspeed zero3` in a plain process: one rank, clean --json stdout, the gathered adapter saved."""
    import os
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")}
    out = tmp_path / "ds"
    argv = [sys.executable, "-m", "zhllama", "--json", "dpo", "--model", str(tiny_base_model)]
    argv += ["--data", str(separable_pairs), "--output", str(out), "--template", "none", "--lora-rank", "8"]
    argv += ["--max-steps", "2", "--deepspeed", "zero3"]
    done = subprocess.run(argv, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["steps"] == 2  # nothing but the summary on stdout
    adapter = load_file(out / "adapter_model.safetensors")
    a = next(v for k, v in adapter.items() if k.endswith("q_proj.lora_A.weight"))
    assert a.shape == (8, 64)  # gathered from the ZeRO-3 partitions, not an empty shard


def test_ppo_scores_with_an_rm_adapter(tmp_path, tiny_base_model, separable_pairs, align_cfg):
    """An `rm` LoRA output as --reward-model: batched, padded scores equal one-at-a-time PEFT scores."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from zhllama.core.alignment.tasks import RewardModelScorer, load_reward_model

    rm_cfg = align_cfg(RmConfig, tiny_base_model, separable_pairs, output=tmp_path / "rm", max_steps=3)
    rm(rm_cfg)
    tok = ZhTokenizer(tmp_path / "rm")
    model = load_reward_model(tmp_path / "rm", tok, torch.float32)
    prompts = {"a": [tok.bos_id, *tok.encode("What do you think")], "b": [tok.bos_id, *tok.encode("Hi")]}
    completions = [tok.encode("It is good, the cat is good.") + [tok.eos_id], tok.encode("bad") + [tok.eos_id]]
    scores = RewardModelScorer(model, tok.pad_id, prompts)(["a", "b"], None, completions)
    reference = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(str(tiny_base_model), num_labels=1), str(tmp_path / "rm")
    ).eval()
    with torch.no_grad():
        for got, (key, completion) in zip(scores, zip("ab", completions, strict=True), strict=True):
            expected = reference(torch.tensor([prompts[key] + completion])).logits.item()
            assert got == pytest.approx(expected, abs=1e-5)

    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text('{"prompt": "Tell me"}\n{"prompt": "Say it"}\n')
    cfg = align_cfg(
        PpoConfig,
        tiny_base_model,
        prompts_file,
        output=tmp_path / "ppo",
        reward_model=tmp_path / "rm",
        max_steps=2,
        max_completion_length=4,
    )
    assert ppo(cfg)["steps"] == 2


def test_failed_run_leaves_no_output(tmp_path, tiny_base_model, separable_pairs, align_cfg, monkeypatch):
    from transformers import Trainer

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "training_step", boom)
    cfg = align_cfg(DpoConfig, tiny_base_model, separable_pairs, max_steps=2)
    with pytest.raises(KeyboardInterrupt):
        dpo(cfg)
    assert not cfg.output.exists()


def test_adapter_for_another_base_is_one_line(tmp_path, run_cli, capsys, tiny_base_model, separable_pairs):
    """dpo continues an --adapter through the pipeline's one loader: a size mismatch names the adapter."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    lora = tmp_path / "lora"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_base_model)),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    model.save_pretrained(str(lora))
    tensors = load_file(lora / "adapter_model.safetensors")  # A matrices for hidden size 32 (the model has 64)
    save_file(
        {k: (v[:, :32] if "lora_A" in k else v[:32]).contiguous() for k, v in tensors.items()},
        lora / "adapter_model.safetensors",
    )
    out = tmp_path / "out"
    argv = ["dpo", "-m", tiny_base_model, "--tokenizer", tiny_base_model, "-d", separable_pairs, "--adapter", lora]
    capsys.readouterr()  # the set-up's own progress bars
    code, _, err = run_cli(*argv, "-o", out, "--template", "none", "--max-steps", "1")
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert f"{lora}: adapter does not fit" in err and "size mismatch" in err
