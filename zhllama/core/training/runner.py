"""The one training pipeline behind pretrain, sft, rm, dpo and ppo.

    check -> tokenizer -> prepare -> load -> wrap -> arguments -> datasets -> trainer -> train
          -> summary -> final write

Each task is a `Task` (a spec, as torchtune's recipes): it names its config class, the model head
(causal LM or a one-score reward head), whether its Trainer applies LoRA itself (TRL), and fills the
lifecycle hooks (axolotl's pattern): its own checks, work before the model loads (`prepare`), the
TrainingArguments (`arguments`), the datasets and collator, the Trainer, the token count, its metrics
and curves. Everything else is the pipeline's and is the same for every task:

- every option and path is checked before anything is written (the output may not be or contain an
  input, even with --force); a run that fails before its first checkpoint leaves no output folder;
- the seed is set right before the model loads (LoRA init and new embedding rows do not depend on
  earlier work in the process); the model is loaded, resized for a larger tokenizer, and wrapped;
- `--resume` continues from the newest complete checkpoint, validated first (`output.py`), and the
  summary (tokens, seconds, losses) covers the whole run;
- under ZeRO-3 every rank gathers the partitioned weights; rank 0 writes the final files (`output.py`).

Libraries' prints (DeepSpeed's op builder, TRL's import) go to stderr: stdout is the command's (`--json`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.training import output

# Curves drawn from the trainer's log history: file name -> (y label, [(log key, legend), ...]).
Curves = dict[str, tuple[str, list[tuple[str, str]]]]


@dataclass
class Run:
    """What the pipeline and the task's hooks build, step by step."""

    cfg: Any
    tokenizer: Any = None
    model: Any = None
    peft_config: Any = None
    overrides: dict = field(default_factory=dict)
    resized: bool = False
    vocab_rows: int = 0
    args: Any = None
    train_set: Any = None
    eval_set: Any = None
    collator: Any = None
    skipped: int | None = None  # examples left out (too long); None where the task drops none
    resume_from: Path | None = None
    progress: Any = None
    trainer: Any = None
    result: Any = None
    state: dict = field(default_factory=dict)  # the task's own things (prompts, reward model, ...)

    @property
    def has_eval(self) -> bool:
        return self.cfg.validation_split > 0


class Task:
    """A training task: the spec the pipeline runs (see the module docstring)."""

    kind: str = ""
    config: type = object
    head: str = "causal"  # or "reward": a one-score sequence-classification head
    lora_by_trainer: bool = False  # TRL's trainers take a LoraConfig and wrap the model themselves
    always_save: tuple[str, ...] = ()  # modules trained fully in every LoRA run (a reward model's score)
    curves: Curves = {}  # drawn besides loss.png, and kept in the summary

    def configure(self, cfg) -> Any:
        """The config to run (before it is validated)."""
        return cfg

    def check(self, cfg) -> None:
        """The task's own checks of a validated config, before anything is written."""

    def inputs(self, cfg) -> list[Path | None]:
        """Inputs besides the option groups' that the output may not be or contain."""
        return []

    def tokenizer(self, cfg):
        from zhllama.core.tokenizer import ZhTokenizer

        return ZhTokenizer(cfg.tokenizer or cfg.adapter or cfg.model)

    def prepare(self, run: Run) -> None:
        """Work before the model loads (and before the seed is set)."""

    def arguments(self, run: Run):
        """The TrainingArguments (or a TRL subclass)."""
        from zhllama.core.training.arguments import training_arguments

        return training_arguments(run.cfg, run.has_eval)

    def datasets(self, run: Run) -> None:
        """Set run.train_set, run.eval_set and run.collator."""
        raise NotImplementedError

    def trainer(self, run: Run):
        raise NotImplementedError

    def tokens(self, run: Run) -> int:
        return run.progress.tokens

    def metrics(self, run: Run) -> dict:
        """The task's own summary entries (after training)."""
        return {}


def train(task: Task, cfg) -> dict:
    """Run `task` with `cfg`; returns the summary (also written as OUT/train_summary.json)."""
    with contextlib.redirect_stdout(sys.stderr):
        return _train(task, cfg)


def check_run(cfg, inputs=()) -> Any:
    """Every check that writes nothing (after `cfg.validate()`): the output against every input, the model source
    (a Meta/TencentPretrain `--model` is converted into the zhllama cache once, never into the output),
    a continued adapter, and the output folder itself. Returns the config with an absolute model path
    (a LoRA adapter records it as its base)."""
    from zhllama.core.checkpoint.sources import resolve_model
    from zhllama.core.paths import check_output

    check_output(cfg.output, [*cfg.inputs(), *inputs])
    model = resolve_model(cfg.model, folder_only=True)  # hub ids and Meta/TencentPretrain folders too
    check_output(cfg.output, [model])
    cfg = dataclasses.replace(cfg, model=Path(model).resolve())
    if cfg.adapter is not None:
        _check_adapter(cfg.adapter)
    output.check_folder(cfg)
    return cfg


def _check_adapter(path: Path) -> None:
    try:
        from zhllama.core.checkpoint.validate import validate_adapter_dir
    except ImportError:  # pragma: no cover - the validation module ships with zhllama
        validate_adapter_dir = None
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    if validate_adapter_dir is not None:
        validate_adapter_dir(path)


def _train(task: Task, cfg) -> dict:
    import torch
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from zhllama.core.training import model as models
    from zhllama.core.training.arguments import quiet_deepspeed
    from zhllama.core.training.callbacks import ProgressCallback

    cfg = task.configure(cfg)
    cfg.validate()
    task.check(cfg)
    cfg = check_run(cfg, task.inputs(cfg))
    run = Run(cfg)
    run.resume_from = output.resume_checkpoint(cfg, task.kind) if cfg.resume else None  # validated
    quiet_deepspeed(cfg)
    run.tokenizer = task.tokenizer(cfg)
    task.prepare(run)

    set_seed(cfg.seed)  # LoRA init and new embedding rows must not depend on earlier work in the process
    pad_id = run.tokenizer.pad_id if task.head == "reward" else None
    run.model, run.overrides = models.load_model(cfg, task.head, pad_id)
    run.resized = len(run.tokenizer) > run.model.config.vocab_size and models.resize(run.model, cfg, run.tokenizer)
    run.model.config.use_cache = False
    run.model, run.peft_config = models.wrap_model(cfg, run.model, task.head, task.always_save, task.lora_by_trainer)
    run.vocab_rows = run.model.get_input_embeddings().weight.shape[0]  # before ZeRO-3 partitions it

    run.args = task.arguments(run)
    task.datasets(run)
    run.progress = ProgressCallback(task.kind)
    if run.resume_from is not None:
        run.progress.restore(run.resume_from / output.PROGRESS_FILE, main=output.is_main())
    output.clear_output(cfg)
    try:
        run.trainer = task.trainer(run)
        run.trainer.add_callback(run.progress)
        run.trainer.remove_callback(PrinterCallback)  # logs go to our progress bar and train_summary.json
        resume = str(run.resume_from) if run.resume_from else None
        run.result = run.trainer.train(resume_from_checkpoint=resume)
    except BaseException as exc:
        output.remove_if_no_checkpoint(cfg.output, exc)
        raise
    summary = _summary(task, run)
    trainer = run.trainer
    state = None
    plugin = trainer.accelerator.state.deepspeed_plugin if getattr(trainer, "is_deepspeed_enabled", False) else None
    if plugin is not None and plugin.zero_stage == 3:  # gather the partitioned weights (a collective: every rank)
        state = trainer.accelerator.get_state_dict(trainer.deepspeed)
    if trainer.is_world_process_zero():
        _write_final(task, run, summary, state)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def _summary(task: Task, run: Run) -> dict:
    trainer, cfg = run.trainer, run.cfg
    tokens = task.tokens(run)
    metrics = task.metrics(run)
    log = trainer.state.log_history
    losses = output.history(log, "loss")
    seconds = run.progress.seconds()
    summary = {
        "kind": task.kind,
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "train_loss": run.result.training_loss,
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else run.result.training_loss,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "resumed_from": int(run.resume_from.name.rsplit("-", 1)[1]) if run.resume_from else None,
        "train_examples": len(run.train_set) if hasattr(run.train_set, "__len__") else None,
        **({"skipped_examples": run.skipped} if run.skipped is not None else {}),
        "resized_vocab": run.resized,
        "vocab_size": run.vocab_rows,
        **({"config_overrides": run.overrides} if run.overrides else {}),
        **{k: v for k, v in metrics.items() if v is not None and not (isinstance(v, float) and math.isnan(v))},
    }
    if task.curves:
        summary["curves"] = {key: output.history(log, key) for _, series in task.curves.values() for key, _ in series}
    summary["config"] = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return summary


def _write_final(task: Task, run: Run, summary: dict, state=None) -> None:
    """Model or adapter, tokenizer, loss.png and the task's curves, then `train_summary.json` (moved in last).

    `state`: the gathered state dict under ZeRO-3 (the live parameters are partitions)."""
    from peft import PeftModel

    cfg, log = run.cfg, run.trainer.state.log_history
    with output.final_files(cfg.output, summary) as tmp:
        model = run.trainer.accelerator.unwrap_model(run.trainer.model)
        saving = {"state_dict": state} if state is not None else {}
        if isinstance(model, PeftModel):  # only the trained adapter (not TRL's frozen "ref" copy)
            saving["selected_adapters"] = ["default"]
        model.save_pretrained(str(tmp), **saving)
        if run.overrides and not cfg.full:
            (tmp / output.OVERRIDES_FILE).write_text(json.dumps({"config": run.overrides}, indent=2) + "\n")
        run.tokenizer.save(tmp)
        train_eval = [("train", output.history(log, "loss"), None), ("eval", output.history(log, "eval_loss"), "o")]
        output.plot(tmp / "loss.png", "loss", train_eval)
        for name, (ylabel, series) in task.curves.items():
            points = [(label, output.history(log, key)) for key, label in series]
            output.plot(tmp / name, ylabel, [(label, p, "." if len(p) < 30 else None) for label, p in points])
    console.log(f"wrote {cfg.output}")


def distributed_sum(value: int) -> int:
    """`value` summed over the ranks of a distributed run (itself in one process)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = torch.tensor([value], dtype=torch.long)
        torch.distributed.all_reduce(total)
        return int(total.item())
    return value
