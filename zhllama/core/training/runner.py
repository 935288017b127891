"""The shared training runner behind `zhllama pretrain` and `zhllama sft`.

Output layout of `--output OUT`:
- `OUT/checkpoints/checkpoint-N/`: Trainer checkpoints (what `--resume` continues from);
- the final artifacts (`adapter_model.safetensors` + `adapter_config.json`, or the full model with
  `--full`; tokenizer files; `train_summary.json`; `loss.png`) are written into a temporary folder
  and moved into OUT only after training succeeded, `train_summary.json` last. An interrupted run
  therefore leaves checkpoints but nothing that looks like a finished result.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from zhllama.core import console
from zhllama.core.assets import config_path
from zhllama.core.errors import UserError
from zhllama.core.training.config import DEFAULT_TARGETS, TrainConfig

__all__ = ["DEFAULT_TARGETS", "TrainConfig", "train", "training_arguments"]

DEEPSPEED_PRESETS = {"zero2": "ds_zero2.json", "zero3": "ds_zero3.json"}
FINAL_FILES_LAST = "train_summary.json"
PROGRESS_FILE = "zhllama_progress.json"  # in each checkpoint: tokens and seconds so far (for --resume)
OVERRIDES_FILE = "zhllama_overrides.json"  # in a LoRA output: config changes `zhllama merge` applies


def single_process_rendezvous() -> None:
    """`--deepspeed` without a launcher (torchrun / deepspeed): declare one process on a free local
    port; otherwise DeepSpeed looks for MPI to find its peers (and fails without mpi4py)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def training_arguments(cfg: TrainConfig, has_eval: bool, streaming: bool = False):
    """Map the config onto `transformers.TrainingArguments` (transformers 5 field names)."""
    import torch
    from transformers import TrainingArguments

    deepspeed = cfg.deepspeed
    if deepspeed in DEEPSPEED_PRESETS:
        deepspeed = str(config_path(DEEPSPEED_PRESETS[deepspeed]))
    elif deepspeed is not None and not Path(deepspeed).is_file():
        raise UserError(f"--deepspeed: {deepspeed}: no such file (or use zero2 / zero3)")
    if deepspeed is not None and "RANK" not in os.environ:
        single_process_rendezvous()
    cpu = not torch.cuda.is_available()
    values = dict(
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
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
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
        torch_compile=cfg.torch_compile,
        neftune_noise_alpha=cfg.neftune_noise_alpha,
        dataloader_num_workers=cfg.dataloader_num_workers,
        ddp_timeout=cfg.ddp_timeout,
        deepspeed=deepspeed,
        report_to=[] if cfg.report_to in ("none", "") else cfg.report_to.split(","),
        use_cpu=cpu,
        ddp_backend="gloo" if cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    if streaming:  # every rank reads its own shard of the stream (see data.py)
        values["accelerator_config"] = {"dispatch_batches": False}
    values.update(cfg.trainer_overrides())
    try:
        return TrainingArguments(**values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"training arguments: {str(exc).splitlines()[0]}") from exc


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints whose trainer_state.json (written last by the Trainer) parses, oldest first."""
    found = []
    for ckpt in folder.glob("checkpoint-*") if folder.is_dir() else ():
        try:
            step = int(ckpt.name.rsplit("-", 1)[1])
            json.loads((ckpt / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        found.append((step, ckpt))
    return [c for _, c in sorted(found)]


def resume_checkpoint(cfg: TrainConfig) -> Path:
    """The newest complete checkpoint; newer incomplete ones (a kill mid-write) are removed."""
    folder = cfg.output / "checkpoints"
    complete = complete_checkpoints(folder)
    if not complete:
        raise UserError(f"{cfg.output}: --resume needs a complete checkpoint in {folder}, none found")
    newest = complete[-1]
    if int(os.environ.get("RANK", "0")) == 0:
        step = int(newest.name.rsplit("-", 1)[1])
        for ckpt in folder.glob("checkpoint-*"):
            tail = ckpt.name.rsplit("-", 1)[1]
            if ckpt not in complete and (not tail.isdigit() or int(tail) > step):
                console.warn(
                    f"{ckpt}: incomplete checkpoint (no trainer_state.json) removed; resuming from {newest.name}"
                )
                shutil.rmtree(ckpt, ignore_errors=True)
    return newest


def _only_empty_checkpoints(out: Path) -> bool:
    entries = list(out.iterdir())
    return all(e.name == "checkpoints" and e.is_dir() and not complete_checkpoints(e) for e in entries)


def _check_output(cfg: TrainConfig) -> None:
    """Validate options and paths, then clear OUT for a fresh run (never an input, even with --force)."""
    check_run(cfg)
    if cfg.resume:
        resume_checkpoint(cfg)
    clear_output(cfg)


def rope_overrides(cfg: TrainConfig, config) -> dict:
    """Config changes for --rope-scaling/--rope-factor/--model-max-length ({} when none given).

    Written into a --full model's config.json by save_pretrained, and as `zhllama_overrides.json`
    next to a LoRA adapter (`{"config": {...}}`), which `zhllama merge` applies to the merged config.
    """
    out: dict = {}
    original = int(config.max_position_embeddings)
    if cfg.rope_scaling is not None:
        current = getattr(config, "rope_parameters", None) or {}
        if current.get("rope_type", "default") != "default":
            raise UserError(
                f"{cfg.model}: the model already has rope scaling {current.get('rope_type')} "
                f"(factor {current.get('factor')}); --rope-scaling would apply a second one"
            )
        scaling = {"rope_type": cfg.rope_scaling, "type": cfg.rope_scaling, "factor": float(cfg.rope_factor)}
        if cfg.rope_scaling == "yarn":
            scaling["original_max_position_embeddings"] = original
        out["rope_scaling"] = scaling
        out["max_position_embeddings"] = cfg.model_max_length or int(original * cfg.rope_factor)
    elif cfg.model_max_length is not None:
        out["max_position_embeddings"] = cfg.model_max_length
    return out


def apply_overrides(config, overrides: dict) -> None:
    if "rope_scaling" in overrides:
        scaling = {k: v for k, v in overrides["rope_scaling"].items() if k != "type"}
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
        config.rope_parameters = {**({"rope_theta": theta} if theta is not None else {}), **scaling}
    if "max_position_embeddings" in overrides:
        config.max_position_embeddings = overrides["max_position_embeddings"]


def load_model(cfg: TrainConfig):
    """The base model, with the rope overrides applied to its config; (model, overrides)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (cfg.model / "config.json").is_file():
        raise UserError(f"{cfg.model}: not a model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(cfg.model), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{cfg.model / 'config.json'}: cannot read model config: {exc}") from exc
    overrides = rope_overrides(cfg, config)
    apply_overrides(config, overrides)
    kwargs = {"config": config, "dtype": torch.float32, "attn_implementation": cfg.attn, "trust_remote_code": False}
    if cfg.bf16:
        kwargs["dtype"] = torch.bfloat16
    if cfg.qlora is not None:
        from zhllama.core.loading.quantization import quantization_for

        on_gpu = torch.cuda.is_available()
        settings = {"double_quant": True} if cfg.qlora == 4 else {}
        kwargs["quantization_config"] = quantization_for(f"{cfg.qlora}bit", config, on_gpu, "float32", **settings)
        kwargs["device_map"] = None if on_gpu else {"": "cpu"}
    try:
        return AutoModelForCausalLM.from_pretrained(str(cfg.model), **kwargs), overrides
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
        try:
            return PeftModel.from_pretrained(model, str(cfg.adapter), is_trainable=True)
        except RuntimeError as exc:  # an adapter trained for another base: the user's mistake
            detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), None)
            if detail is None:
                raise
            raise UserError(f"{cfg.adapter}: adapter does not fit {cfg.model}: {detail}") from exc
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
    """Run a training job; `build_datasets(tokenizer, training_args)` -> (train, eval|None, collator).

    Every option and path is checked before anything is written; a run that fails before its first
    checkpoint leaves no output folder behind; `--resume` continues from the newest complete
    checkpoint, and the summary (tokens, seconds, losses) covers the whole run. Libraries' prints
    (DeepSpeed's op builder) go to stderr: stdout is the command's (`--json`).
    """
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        return _train(cfg, build_datasets, kind)


def _train(cfg: TrainConfig, build_datasets: Callable, kind: str) -> dict:
    import torch
    from transformers import Trainer, set_seed

    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.callbacks import ProgressCallback
    from zhllama.core.training.collate import NUM_TOKENS
    from zhllama.core.training.embeddings import resize_for_tokenizer

    check_run(cfg)
    _quiet_deepspeed(cfg)
    set_seed(cfg.seed)  # LoRA init and new embedding rows must not depend on earlier work in the process
    tok_path = cfg.tokenizer or cfg.adapter or cfg.model
    tokenizer = ZhTokenizer(tok_path)
    base_tokenizer = None
    if any((cfg.model / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        base_tokenizer = ZhTokenizer(cfg.model)
    model, overrides = load_model(cfg)
    resized = resize_for_tokenizer(model, tokenizer, base_tokenizer)
    if resized and "embed_tokens" not in cfg.modules_to_save and not cfg.full:
        console.warn("the vocabulary grew but embed_tokens is not in --modules-to-save: new rows stay untrained")
    model = wrap_model(model, cfg)
    vocab_rows = model.get_input_embeddings().weight.shape[0]  # before ZeRO-3 partitions it
    model.config.use_cache = False
    if cfg.gradient_checkpointing and cfg.qlora is None:
        model.gradient_checkpointing_enable() if cfg.full else model.base_model.model.gradient_checkpointing_enable()
        if not cfg.full:
            model.enable_input_require_grads()

    args = training_arguments(cfg, has_eval=cfg.validation_split > 0, streaming=cfg.streaming)
    train_set, eval_set, collator = build_datasets(tokenizer, args)
    resume_from = resume_checkpoint(cfg) if cfg.resume else None
    progress = ProgressCallback()
    if resume_from is not None:
        progress.restore(resume_from / PROGRESS_FILE, main=int(os.environ.get("RANK", "0")) == 0)

    class CountingTrainer(Trainer):
        """Counts real tokens per step from the collator's NUM_TOKENS (which the model must not see)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            progress.count_batch(int(inputs.pop(NUM_TOKENS, 0)))
            return super().training_step(model, inputs, num_items_in_batch)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs.pop(NUM_TOKENS, None)
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    clear_output(cfg)
    try:
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
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except BaseException:
        _remove_if_no_checkpoint(cfg.output)
        raise
    tokens = progress.tokens
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = torch.tensor([tokens], dtype=torch.long)
        torch.distributed.all_reduce(total)
        tokens = int(total.item())
    metrics = {}
    if eval_set is not None:
        metrics = trainer.evaluate()
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    losses, eval_losses = history(trainer.state.log_history)
    seconds = progress.seconds()
    summary = {
        "kind": kind,
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "train_loss": result.training_loss,
        "final_loss": losses[-1][1] if losses else result.training_loss,
        "first_loss": losses[0][1] if losses else None,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "resumed_from": int(resume_from.name.rsplit("-", 1)[1]) if resume_from else None,
        "resized_vocab": resized,
        "vocab_size": vocab_rows,
        "train_examples": len(train_set) if hasattr(train_set, "__len__") else None,
        **({"config_overrides": overrides} if overrides else {}),
        **{k: v for k, v in metrics.items() if k.startswith("eval_")},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    state_dict = None
    if getattr(trainer, "is_deepspeed_enabled", False):  # every rank: ZeRO-3 gathers the partitions
        state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed)
    if trainer.is_world_process_zero():
        final_model = trainer.accelerator.unwrap_model(trainer.model)
        _write_final(cfg, final_model, tokenizer, summary, (losses, eval_losses), overrides, state_dict)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def _quiet_deepspeed(cfg: TrainConfig) -> None:
    """DeepSpeed logs to stdout (which `--json` owns): send its log lines to stderr when it is used.
    (The CLI names DeepSpeed's accelerator on CPU machines, so its detection warning never prints.)"""
    if cfg.deepspeed is not None:
        import sys

        try:
            from deepspeed.utils.logging import logger
        except ImportError as exc:
            raise UserError("--deepspeed needs the deepspeed package (pip install 'zhllama[deepspeed]')") from exc
        for handler in logger.handlers:
            if getattr(handler, "stream", None) is sys.stdout:
                handler.setStream(sys.stderr)


def check_run(cfg: TrainConfig) -> None:
    """Every check of `_check_output` that writes nothing (a Meta/TencentPretrain `--model` is converted
    into the zhllama cache once, never into the output)."""
    from zhllama.core.checkpoint.sources import resolve_model
    from zhllama.core.paths import check_output

    cfg.validate()
    check_output(cfg.output, [cfg.model, cfg.tokenizer, cfg.adapter, cfg.cache_dir, cfg.deepspeed, *cfg.data])
    cfg.model = resolve_model(cfg.model, folder_only=True)  # hub ids and Meta/TencentPretrain folders too
    check_output(cfg.output, [cfg.model])
    out = cfg.output
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output path is an existing file")
    if cfg.resume:
        if not complete_checkpoints(out / "checkpoints"):
            raise UserError(f"{out}: --resume needs a complete checkpoint in {out / 'checkpoints'}, none found")
        return
    if out.is_dir() and any(out.iterdir()) and not cfg.force and not _only_empty_checkpoints(out):
        raise UserError(f"{out}: output directory exists and is not empty (use --force, or --resume)")


def clear_output(cfg: TrainConfig) -> None:
    """Empty OUT for a fresh run (checked by `check_run`; global rank 0, which writes every checkpoint, does it)."""
    out = cfg.output
    if not cfg.resume and out.is_dir() and any(out.iterdir()) and int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(out)


def _remove_if_no_checkpoint(out: Path) -> None:
    """After a failed run: remove what it created unless a checkpoint (something to resume) exists."""
    if int(os.environ.get("RANK", "0")) != 0 or not out.is_dir():
        return
    if complete_checkpoints(out / "checkpoints"):
        return
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and not any(p.name.startswith("checkpoint-") for p in ckpts.iterdir()):
        shutil.rmtree(ckpts, ignore_errors=True)
    if not any(out.iterdir()):
        out.rmdir()


def history(log_history: list[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) and (step, eval_loss) from the Trainer's log history (restored on --resume)."""
    losses = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e]
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e]
    return losses, evals


@contextlib.contextmanager
def final_files(out: Path, summary: dict) -> Iterator[Path]:
    """A temporary folder inside OUT for the final artifacts; when the block succeeds they move into
    OUT with `train_summary.json` (written from `summary`) last, so its presence means the run finished."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".final-", dir=out))
    try:
        yield tmp
        (tmp / FINAL_FILES_LAST).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
        names = sorted(p.name for p in tmp.iterdir() if p.name != FINAL_FILES_LAST) + [FINAL_FILES_LAST]
        for name in names:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_final(cfg: TrainConfig, model, tokenizer, summary: dict, curves, overrides: dict, state_dict=None) -> None:
    with final_files(cfg.output, summary) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
        if overrides and not cfg.full:
            (tmp / OVERRIDES_FILE).write_text(json.dumps({"config": overrides}, indent=2) + "\n")
        tokenizer.save(tmp)
        plot_loss(*curves, tmp / "loss.png")
