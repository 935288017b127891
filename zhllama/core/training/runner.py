"""The shared training runner behind `zhllama pretrain` and `zhllama sft`.

Output layout of `--output OUT`:
- `OUT/checkpoints/checkpoint-N/`: Trainer checkpoints (what `--resume` continues from);
- the final artifacts (`adapter_model.safetensors` + `adapter_config.json`, or the full model with
  `--full`; tokenizer files; `train_summary.json`; `loss.png`) are written into a temporary folder
  and moved into OUT only after training succeeded, `train_summary.json` last. An interrupted run
  therefore leaves checkpoints but nothing that looks like a finished result.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zhllama.core import console
from zhllama.core.assets import config_path
from zhllama.core.errors import UserError

DEFAULT_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
DEEPSPEED_PRESETS = {"zero2": "ds_zero2.json", "zero3": "ds_zero3.json"}
FINAL_FILES_LAST = "train_summary.json"


@dataclass
class TrainConfig:
    """Everything a training run needs; field names follow the CLI flags (kebab -> snake)."""

    model: Path
    output: Path
    data: list[Path]
    tokenizer: Path | None = None
    # LoRA / full / QLoRA
    lora_rank: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    lora_targets: str = DEFAULT_TARGETS
    modules_to_save: str = "embed_tokens,lm_head"
    full: bool = False
    qlora: int | None = None
    adapter: Path | None = None
    # TrainingArguments
    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 1
    per_device_eval_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    logging_steps: int = 10
    save_steps: int = 200
    eval_steps: int | None = None
    save_total_limit: int | None = 3
    seed: int = 42
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    attn: str = "sdpa"
    deepspeed: str | None = None
    report_to: str = "none"
    # data
    validation_split: float = 0.0
    cache_dir: Path | None = None
    resume: bool = False
    force: bool = False
    extra: dict = field(default_factory=dict)  # kind-specific settings (block_size, template, ...)


def training_arguments(cfg: TrainConfig, has_eval: bool):
    """Map the config onto `transformers.TrainingArguments` (transformers 5 field names)."""
    import torch
    from transformers import TrainingArguments

    deepspeed = cfg.deepspeed
    if deepspeed in DEEPSPEED_PRESETS:
        deepspeed = str(config_path(DEEPSPEED_PRESETS[deepspeed]))
    elif deepspeed is not None and not Path(deepspeed).is_file():
        raise UserError(f"--deepspeed: {deepspeed}: no such file (or use zero2 / zero3)")
    cpu = not torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(cfg.output / "checkpoints"),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a value < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval and cfg.eval_steps else "no",
        eval_steps=cfg.eval_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        deepspeed=deepspeed,
        report_to=[] if cfg.report_to in ("none", "") else cfg.report_to.split(","),
        use_cpu=cpu,
        ddp_backend="gloo" if cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def _check_output(cfg: TrainConfig) -> None:
    out = cfg.output
    if cfg.resume:
        if not (out / "checkpoints").is_dir() or not any((out / "checkpoints").glob("checkpoint-*")):
            raise UserError(f"{out}: --resume needs a checkpoint in {out / 'checkpoints'}, none found")
        return
    if out.is_dir() and any(out.iterdir()):
        if not cfg.force:
            raise UserError(f"{out}: output directory exists and is not empty (use --force, or --resume)")
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            shutil.rmtree(out)


def load_model(cfg: TrainConfig):
    import torch
    from transformers import AutoModelForCausalLM

    if not (cfg.model / "config.json").is_file():
        raise UserError(f"{cfg.model}: not a model folder (no config.json)")
    kwargs = {"dtype": torch.float32, "attn_implementation": cfg.attn, "trust_remote_code": False}
    if cfg.bf16:
        kwargs["dtype"] = torch.bfloat16
    if cfg.qlora is not None:
        if cfg.qlora not in (4, 8):
            raise UserError(f"--qlora: {cfg.qlora} is not 4 or 8")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
            )
            if cfg.qlora == 4
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        kwargs["device_map"] = {"": "cpu"} if not torch.cuda.is_available() else None
    try:
        return AutoModelForCausalLM.from_pretrained(str(cfg.model), **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"{cfg.model}: cannot load model: {exc}") from exc


def wrap_model(model, cfg: TrainConfig):
    """LoRA (or a continued adapter) unless `--full`."""
    if cfg.full:
        if cfg.qlora is not None:
            raise UserError("--full and --qlora cannot be combined (a quantized base cannot be fully trained)")
        return model
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if cfg.qlora is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.adapter is not None:
        if not (cfg.adapter / "adapter_config.json").is_file():
            raise UserError(f"{cfg.adapter}: not a PEFT adapter folder (no adapter_config.json)")
        return PeftModel.from_pretrained(model, str(cfg.adapter), is_trainable=True)
    targets = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise UserError(f"--lora-targets: module(s) {', '.join(missing)} not found in the model")
    to_save = [m.strip() for m in cfg.modules_to_save.split(",") if m.strip()] or None
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=to_save,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def plot_loss(losses: list[tuple[int, float]], eval_losses: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if losses:
        ax.plot(*zip(*losses, strict=True), label="train")
    if eval_losses:
        ax.plot(*zip(*eval_losses, strict=True), marker="o", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(cfg: TrainConfig, build_datasets: Callable, kind: str) -> dict:
    """Run a training job; `build_datasets(tokenizer, training_args)` -> (train, eval|None, collator)."""
    import torch
    from transformers import Trainer

    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.callbacks import ProgressCallback
    from zhllama.core.training.collate import NUM_TOKENS
    from zhllama.core.training.embeddings import resize_for_tokenizer

    _check_output(cfg)
    from transformers import set_seed

    set_seed(cfg.seed)  # LoRA init and new embedding rows must not depend on earlier work in the process
    tok_path = cfg.tokenizer or cfg.adapter or cfg.model
    tokenizer = ZhTokenizer(tok_path)
    base_tokenizer = None
    if any((cfg.model / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        base_tokenizer = ZhTokenizer(cfg.model)
    model = load_model(cfg)
    resized = resize_for_tokenizer(model, tokenizer, base_tokenizer)
    if resized and "embed_tokens" not in cfg.modules_to_save and not cfg.full:
        console.warn("the vocabulary grew but embed_tokens is not in --modules-to-save: new rows stay untrained")
    model = wrap_model(model, cfg)
    model.config.use_cache = False
    if cfg.gradient_checkpointing and cfg.qlora is None:
        model.gradient_checkpointing_enable() if cfg.full else model.base_model.model.gradient_checkpointing_enable()
        if not cfg.full:
            model.enable_input_require_grads()

    args = training_arguments(cfg, has_eval=cfg.validation_split > 0)
    train_set, eval_set, collator = build_datasets(tokenizer, args)
    progress = ProgressCallback()

    class CountingTrainer(Trainer):
        """Counts real tokens per step from the collator's NUM_TOKENS (which the model must not see)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            progress.count_batch(int(inputs.pop(NUM_TOKENS, 0)))
            return super().training_step(model, inputs, num_items_in_batch)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs.pop(NUM_TOKENS, None)
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        callbacks=[progress],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # logs go to our progress bar and train_summary.json
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    seconds = time.perf_counter() - start
    tokens = progress.tokens
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = torch.tensor([tokens], dtype=torch.long)
        torch.distributed.all_reduce(total)
        tokens = int(total.item())
    metrics = {}
    if eval_set is not None:
        metrics = trainer.evaluate()
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    summary = {
        "kind": kind,
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "train_loss": result.training_loss,
        "final_loss": progress.losses[-1][1] if progress.losses else result.training_loss,
        "first_loss": progress.losses[0][1] if progress.losses else None,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "resized_vocab": resized,
        "vocab_size": model.get_input_embeddings().weight.shape[0],
        "train_examples": len(train_set),
        **{k: v for k, v in metrics.items() if k.startswith("eval_")},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    if trainer.is_world_process_zero():
        _write_final(cfg, trainer.model, tokenizer, summary, progress)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def _write_final(cfg: TrainConfig, model, tokenizer, summary: dict, progress) -> None:
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".final-", dir=out))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save(tmp)
        plot_loss(progress.losses, progress.eval_losses, tmp / "loss.png")
        (tmp / FINAL_FILES_LAST).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
        names = sorted(p.name for p in tmp.iterdir() if p.name != FINAL_FILES_LAST) + [FINAL_FILES_LAST]
        for name in names:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
