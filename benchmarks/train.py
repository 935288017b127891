"""Training throughput, measured as ratios in one process.

1. `zhllama pretrain` (core API) vs a plain Trainer + PEFT script on the same model, data and
   settings: tokens/s ratio (goal >= 0.95x).
2. SFT on the shared Chinese Alpaca records: non-pad tokens/s with `--packing` vs padded batches
   (goal >= 2x).
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
STEPS, BLOCK, BATCH = 30, 256, 4
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def plain_trainer_peft(model_dir: Path, text: Path, out: Path) -> float:
    """The baseline a researcher would write by hand: tokenize, group, Trainer, PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

    set_seed(1)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids: list[int] = []
    for line in text.read_text(encoding="utf-8").splitlines():
        ids += tok(line)["input_ids"] + [tok.eos_token_id]
    blocks = [ids[i : i + BLOCK] for i in range(0, len(ids) - BLOCK + 1, BLOCK)]
    dataset = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            modules_to_save=["embed_tokens", "lm_head"],
        ),
    )
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        learning_rate=1e-3,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    start = time.perf_counter()
    trainer.train()
    return STEPS * BATCH * BLOCK / (time.perf_counter() - start)


def _settings(model_dir: Path, data: Path, out: Path, learning_rate: float) -> dict:
    """What both zhllama runs share (the baseline's LoRA, steps and batch)."""
    return dict(
        model=model_dir,
        data=[data],
        output=out,
        lora_rank=8,
        lora_alpha=16,
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        learning_rate=learning_rate,
        save_steps=10_000,
        cache_dir=out.parent / "cache",
        seed=1,
    )


def zhllama_pretrain(model_dir: Path, text: Path, out: Path) -> float:
    from zhllama.core.training import PretrainConfig, pretrain

    summary = pretrain(PretrainConfig(**_settings(model_dir, text, out, 1e-3), block_size=BLOCK))
    return summary["tokens"] / summary["seconds"]


def sft_tokens_per_second(model_dir: Path, data: Path, out: Path, packing: bool) -> float:
    from zhllama.core.training import SftConfig, sft

    settings = _settings(model_dir, data, out, 1e-4)
    summary = sft(SftConfig(**settings, template="llama2-zh", max_seq_length=512, packing=packing))
    return summary["tokens"] / summary["seconds"]  # tokens = non-pad tokens fed to the model


def main() -> dict:
    from zhllama.core import console

    console.SETTINGS.quiet = True
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        model = tiny_model(w, SHAPE)
        text = data_path("corpus_zh.txt")
        plain = plain_trainer_peft(model, text, w / "plain")
        ours = zhllama_pretrain(model, text, w / "ours")
        result = {
            "pretrain_tokens_per_s": ours,
            "plain_trainer_peft_tokens_per_s": plain,
            "pretrain_ratio": ours / plain,
        }
        print(
            f"pretrain: zhllama {ours:,.0f} tok/s vs plain Trainer+PEFT {plain:,.0f} tok/s "
            f"-> {ours / plain:.2f}x (goal >= 0.95x)"
        )
        alpaca = SHARED / "instruct" / "alpaca_zh_demo.json"
        if alpaca.is_file():
            padded = sft_tokens_per_second(model, alpaca, w / "padded", packing=False)
            packed = sft_tokens_per_second(model, alpaca, w / "packed", packing=True)
            result.update(
                {
                    "sft_padded_tokens_per_s": padded,
                    "sft_packed_tokens_per_s": packed,
                    "sft_packing_ratio": packed / padded,
                }
            )
            print(
                f"sft non-pad tokens/s: packed {packed:,.0f} vs padded {padded:,.0f} -> {packed / padded:.2f}x "
                "(goal >= 2x)"
            )
        else:
            print(f"sft packing benchmark skipped: {alpaca} not found")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
