"""Alignment throughput, measured as ratios in one process.

`zhllama dpo` (core API: template tokenization, DpoConfig -> TRL DPOConfig, checkpoints, plots,
summary) vs a plain TRL DPOTrainer + PEFT script on the same model, pairs and settings: training
pairs/s ratio (goal >= 0.95x, i.e. the wrapper costs nothing per step). The plain script lets TRL
tokenize text itself; both train LoRA with the implicit (adapter-disabled) reference.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks._models import tiny_model
from zhllama.core.assets import data_path
from zhllama.core.tiny import TinyShape

SHAPE = TinyShape(
    hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4
)
STEPS, BATCH = 20, 4


def pairs_file(out: Path) -> Path:
    """The shipped pairs repeated, as flat prompt/chosen/rejected records (both scripts read them)."""
    records = []
    for line in data_path("preference_pairs.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if "prompt" in r:
            records.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
    out.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records * 8) + "\n", encoding="utf-8")
    return out


def plain_trl(model_dir: Path, pairs: Path, out: Path) -> float:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.pad_token = tok.pad_token or tok.unk_token
    dataset = load_dataset("json", data_files=str(pairs), split="train")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    args = DPOConfig(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-3,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=1,
    )
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        modules_to_save=["embed_tokens", "lm_head"],
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=lora)
    start = time.perf_counter()
    trainer.train()
    return STEPS * BATCH / (time.perf_counter() - start)


def zhllama_dpo(model_dir: Path, pairs: Path, out: Path) -> float:
    from zhllama.core.alignment import dpo
    from zhllama.core.alignment.config import DpoConfig

    cfg = DpoConfig(
        model=model_dir,
        data=[pairs],
        output=out,
        lora_rank=8,
        lora_alpha=16,
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-3,
        logging_steps=10,
        save_steps=10_000,
        seed=1,
        template="none",
    )
    return STEPS * BATCH / dpo(cfg)["seconds"]


def main() -> dict:
    from zhllama.core import console

    console.SETTINGS.quiet = True
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        model = tiny_model(w, SHAPE)
        pairs = pairs_file(w / "pairs.jsonl")
        plain = plain_trl(model, pairs, w / "plain")
        ours = zhllama_dpo(model, pairs, w / "ours")
    print(
        f"dpo: zhllama {ours:.2f} pairs/s vs plain TRL DPOTrainer {plain:.2f} pairs/s -> {ours / plain:.2f}x (goal >= 0.95x)"
    )
    return {"dpo_pairs_per_s": ours, "plain_trl_dpo_pairs_per_s": plain, "dpo_ratio": ours / plain}


if __name__ == "__main__":
    main()
