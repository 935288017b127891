"""What rm, dpo and ppo share: TRL configs from `TrainConfig`, models, LoRA, and the final output.

The conventions are `sft`'s (`zhllama.core.training.runner`): the same flags (`TrainConfig`), the
same TrainingArguments mapping (copied into TRL's config classes, which subclass it), checkpoints
in `OUT/checkpoints/` for `--resume`, and final files written into a temporary folder and moved
into OUT after training succeeded, `train_summary.json` last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.training.runner import TrainConfig, final_files, plot_loss, training_arguments

# Curves drawn from the trainer's log history: file name -> (y label, [(log key, legend), ...]).
Curves = dict[str, tuple[str, list[tuple[str, str]]]]


def check_inputs(cfg: TrainConfig, *inputs: Path | None) -> TrainConfig:
    """Every check that writes nothing (sft's `check_run`, plus `inputs` the output may not touch).

    Returns the config with an absolute model path (a LoRA adapter records it as its base)."""
    from zhllama.core.paths import check_output as output_not_input
    from zhllama.core.training.runner import check_run

    check_run(cfg)
    output_not_input(cfg.output, inputs)
    if cfg.adapter is not None and not (cfg.adapter / "adapter_config.json").is_file():
        raise UserError(f"{cfg.adapter}: not a PEFT adapter folder (no adapter_config.json)")
    return dataclasses.replace(cfg, model=Path(cfg.model).resolve())


def check_output(cfg: TrainConfig) -> None:
    """Clear OUT for a fresh run (after the data checks; sft's rule: --force or --resume for a non-empty OUT)."""
    from zhllama.core.training.runner import clear_output

    clear_output(cfg)


def stdout_to_stderr():
    """DeepSpeed and its op builders print to stdout; under `--json` stdout must hold only the result."""
    return contextlib.redirect_stdout(sys.stderr)


def trl():
    """The `trl` module. Imported with stdout pointed at stderr: TRL imports DeepSpeed when installed, whose
    logger writes to the stdout of its import time (a warning there would break `--json`)."""
    with stdout_to_stderr():
        try:
            import trl
        except ImportError as exc:
            from zhllama.core.errors import MissingDependencyError

            raise MissingDependencyError(
                f"rm / dpo / ppo need TRL ({exc}); install it with: pip install 'zhllama[align]'"
            ) from exc

        if importlib.util.find_spec("deepspeed") is not None:
            import deepspeed  # noqa: F401  (its logger binds to the redirected stream now)
    return trl


def trl_config(config_cls, cfg: TrainConfig, has_eval: bool, **overrides):
    """A TRL config (a TrainingArguments subclass) with exactly sft's TrainingArguments values."""
    from transformers import TrainingArguments

    with stdout_to_stderr():  # training_arguments also sets up a launcher-less --deepspeed run
        base = training_arguments(cfg, has_eval)
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
        values.update(overrides)
        return config_cls(**values)


def load_tokenizer(cfg: TrainConfig):
    from zhllama.core.tokenizer import ZhTokenizer

    tokenizer = ZhTokenizer(cfg.tokenizer or cfg.adapter or cfg.model)
    if tokenizer.hf is None:
        raise UserError(f"{tokenizer.path}: training needs a tokenizer folder (tokenizer.json / tokenizer_config.json)")
    if tokenizer.hf.pad_token is None:  # pad as zhllama does everywhere (unk, as LLaMA did), not with EOS
        tokenizer.hf.pad_token = tokenizer.id_to_piece(tokenizer.pad_id)
    return tokenizer


def quantization(cfg: TrainConfig, reward_head: bool):
    """The project's bitsandbytes config for `--qlora 4|8` (CPU-safe 4-bit; a reward head stays full precision)."""
    if cfg.qlora is None:
        return None
    import torch
    from transformers import AutoConfig

    from zhllama.core.loading.quantization import bnb_config, cpu_4bit_unsupported

    load = f"{cfg.qlora}bit"
    skip = []
    if load == "4bit" and not torch.cuda.is_available():
        skip = cpu_4bit_unsupported(AutoConfig.from_pretrained(str(cfg.model), trust_remote_code=False))
    if reward_head:
        skip.append("score")
    return bnb_config(load, "float32", double_quant=True, skip_modules=skip or None)


def load_base(cfg: TrainConfig, tokenizer, reward_head: bool = False):
    """The policy (causal LM) or a reward model (sequence classification, one label), sized for the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed

    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.embeddings import resize_for_tokenizer

    set_seed(cfg.seed)  # a reward head and new embedding rows are random: runs must not depend on earlier work
    kwargs = {"dtype": torch.bfloat16 if cfg.bf16 else torch.float32, "attn_implementation": cfg.attn}
    quant = quantization(cfg, reward_head)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": "cpu"} if not torch.cuda.is_available() else None
    if reward_head:
        kwargs.update(num_labels=1, pad_token_id=tokenizer.pad_id)
    cls = AutoModelForSequenceClassification if reward_head else AutoModelForCausalLM
    try:
        with stdout_to_stderr():
            model = cls.from_pretrained(str(cfg.model), trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"{cfg.model}: cannot load model: {exc}") from exc
    base_tokenizer = None
    if any((cfg.model / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        base_tokenizer = ZhTokenizer(cfg.model)
    # ZeRO-3 partitions weights at load (their shapes read 0): only look at them when the vocabulary must grow
    resized = len(tokenizer) > model.config.vocab_size and resize_for_tokenizer(model, tokenizer, base_tokenizer)
    model.config.use_cache = False
    return model, resized


def lora_config(cfg: TrainConfig, model, task_type: str, always_save: tuple[str, ...] = ()):
    """A fresh LoRA config; `--modules-to-save` entries the model lacks (lm_head of a reward model) are skipped."""
    from peft import LoraConfig

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
    missing = [t for t in targets if t not in names]
    if missing:
        raise UserError(f"--lora-targets: module(s) {', '.join(missing)} not found in the model")
    to_save = [m.strip() for m in cfg.modules_to_save.split(",") if m.strip() in names]
    to_save += [m for m in always_save if m not in to_save]
    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=to_save or None,
        task_type=task_type,
    )


def peft_setup(cfg: TrainConfig, model, task_type: str, always_save: tuple[str, ...] = ()):
    """(model, peft_config) for a TRL trainer: a new LoRA (config), a continued adapter (model), or full."""
    if cfg.full:
        return model, None
    if cfg.qlora is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.adapter is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(cfg.adapter), is_trainable=True), None
    return model, lora_config(cfg, model, task_type, always_save)


def fp32_trainables(trainer, cfg: TrainConfig) -> None:
    """Undo TRL's bf16 cast of a quantized model's trainable full modules (score head, embed_tokens,
    lm_head): zhllama computes in fp32 (`bnb_4bit_compute_dtype`), and a bf16 head fed fp32 hidden
    states fails ("expected m1 and m2 to have the same dtype"). LoRA weights keep TRL's bf16."""
    if cfg.qlora is None or cfg.bf16:
        return
    for name, param in trainer.model.named_parameters():
        if param.requires_grad and "lora_" not in name:
            param.data = param.data.float()


def history(trainer, key: str) -> list[tuple[int, float]]:
    return [(e["step"], float(e[key])) for e in trainer.state.log_history if key in e and "step" in e]


def first_last(trainer, key: str) -> tuple[float | None, float | None]:
    points = history(trainer, key)
    return (points[0][1], points[-1][1]) if points else (None, None)


def plot_curves(trainer, path: Path, ylabel: str, series: list[tuple[str, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, label in series:
        points = history(trainer, key)
        if points:
            ax.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(
    trainer, cfg: TrainConfig, kind: str, tokenizer, examples: int, metrics, curves: Curves, skipped: int, resized: bool
) -> dict:
    """Run `trainer` (resuming when asked), then write the final output; returns the summary.

    `metrics()` returns the task's own summary entries (called after training)."""
    import torch
    from transformers.trainer_callback import PrinterCallback

    from zhllama.core.training.callbacks import ProgressCallback

    progress = ProgressCallback()
    trainer.add_callback(progress)
    trainer.remove_callback(PrinterCallback)  # logs go to the progress bar and train_summary.json
    from zhllama.core.training.runner import resume_checkpoint

    start = time.perf_counter()
    resume = str(resume_checkpoint(cfg)) if cfg.resume else None
    try:
        with stdout_to_stderr():
            result = trainer.train(resume_from_checkpoint=resume)
    except BaseException:  # sft's rule: a run that fails before its first checkpoint leaves no OUT behind
        from zhllama.core.training.runner import _remove_if_no_checkpoint

        _remove_if_no_checkpoint(cfg.output)
        raise
    seconds = time.perf_counter() - start
    extra = metrics()
    if trainer.is_world_process_zero():  # the shared summary table shows losses; these are the task's numbers
        shown = [
            f"{k.replace('_', ' ')} {v:.4g}" for k, v in extra.items() if isinstance(v, float) and math.isfinite(v)
        ]
        console.log(f"{kind}: " + ", ".join(shown))
    losses = history(trainer, "loss")
    tokens = max((int(e["num_tokens"]) for e in trainer.state.log_history if "num_tokens" in e), default=0)
    summary = {
        "kind": kind,
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "train_loss": result.training_loss,
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else result.training_loss,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "train_examples": examples,
        "skipped_examples": skipped,
        "resized_vocab": resized,
        "vocab_size": trainer.model.config.vocab_size,
        **{k: v for k, v in extra.items() if v is not None and not (isinstance(v, float) and math.isnan(v))},
        "curves": {key: history(trainer, key) for _, series in curves.values() for key, _ in series},
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
    }
    state = None
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    if plugin is not None and plugin.zero_stage == 3:  # gather the partitioned weights (a collective: every rank)
        state = trainer.accelerator.get_state_dict(trainer.deepspeed)
    if trainer.is_world_process_zero():
        write_final(cfg, trainer, tokenizer, summary, curves, state)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def write_final(cfg: TrainConfig, trainer, tokenizer, summary: dict, curves: Curves, state=None) -> None:
    """Model or adapter, tokenizer, loss.png and the curves, then `train_summary.json` (moved in last).

    `state`: the gathered state dict under ZeRO-3 (the live parameters are partitions)."""
    from peft import PeftModel

    with final_files(cfg.output, summary) as tmp:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if isinstance(model, PeftModel):  # only the trained adapter, not TRL's frozen "ref" copy
            model.save_pretrained(str(tmp), state_dict=state, selected_adapters=["default"])
        else:
            model.save_pretrained(str(tmp), state_dict=state)
        tokenizer.save(tmp)
        plot_loss(history(trainer, "loss"), history(trainer, "eval_loss"), tmp / "loss.png")
        for name, (ylabel, series) in curves.items():
            plot_curves(trainer, tmp / name, ylabel, series)
    console.log(f"wrote {cfg.output}")
