"""TrainingArguments from a run's config (transformers 5 field names), and DeepSpeed set-up."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from zhllama.core.assets import config_path
from zhllama.core.errors import UserError

DEEPSPEED_PRESETS = {"zero2": "ds_zero2.json", "zero3": "ds_zero3.json"}


def single_process_rendezvous() -> None:
    """`--deepspeed` without a launcher (torchrun / deepspeed): declare one process on a free local
    port; otherwise DeepSpeed looks for MPI to find its peers (and fails without mpi4py)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def training_arguments(cfg, has_eval: bool, streaming: bool = False):
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
    if streaming:  # every rank reads its own shard of the stream (see core/training/data)
        values["accelerator_config"] = {"dispatch_batches": False}
    values.update(cfg.trainer_overrides())
    try:
        return TrainingArguments(**values)
    except (ValueError, TypeError) as exc:
        raise UserError(f"training arguments: {str(exc).splitlines()[0]}") from exc


def quiet_deepspeed(cfg) -> None:
    """DeepSpeed logs to stdout (which `--json` owns): send its log lines to stderr when it is used.
    (The CLI names DeepSpeed's accelerator on CPU machines, so its detection warning never prints.)"""
    if cfg.deepspeed is not None:
        try:
            from deepspeed.utils.logging import logger
        except ImportError as exc:
            raise UserError("--deepspeed needs the deepspeed package (pip install 'zhllama[deepspeed]')") from exc
        for handler in logger.handlers:
            if getattr(handler, "stream", None) is sys.stdout or getattr(handler, "stream", None) is sys.__stdout__:
                handler.setStream(sys.stderr)
