"""What rm, dpo and ppo share on the training pipeline: TRL, its config classes, the HF tokenizer.

`TrlTask` is a `zhllama.core.training.runner.Task` whose Trainer is one of TRL's: its config class
(a TrainingArguments subclass) gets exactly the TrainingArguments values of pretrain / sft plus the
task's own (`trl_settings`), TRL applies the LoRA config itself, and a quantized model's trainable
full modules are kept in fp32. The rest (checks, loading, resume, summary, final write) is the
pipeline's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import sys

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.training.runner import Run, Task


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


def split(dataset, fraction: float, seed: int):
    """The training tasks' validation split (imported when called: their module pulls in torch)."""
    from zhllama.core.training.tasks import split as held_out

    return held_out(dataset, fraction, seed)


class TrlTask(Task):
    """A task trained by a TRL trainer (one instance per run)."""

    lora_by_trainer = True
    trl_config = ""  # the name of TRL's config class (DPOConfig, ...)

    def check(self, cfg):
        from zhllama.core.templates import get_template

        self.trl = trl()
        self.template = get_template(cfg.template)  # an unknown template is an option error, before any data

    def tokenizer(self, cfg):
        tokenizer = super().tokenizer(cfg)
        if tokenizer.hf is None:
            raise UserError(
                f"{tokenizer.path}: training needs a tokenizer folder (tokenizer.json / tokenizer_config.json)"
            )
        if tokenizer.hf.pad_token is None:  # pad as zhllama does everywhere (unk, as LLaMA did), not with EOS
            tokenizer.hf.pad_token = tokenizer.id_to_piece(tokenizer.pad_id)
        return tokenizer

    def trl_settings(self, run: Run) -> dict:
        """The task's own fields of its TRL config."""
        return {}

    def arguments(self, run: Run):
        """A TRL config (a TrainingArguments subclass) with exactly pretrain / sft's TrainingArguments values."""
        from transformers import TrainingArguments

        from zhllama.core.training.arguments import training_arguments

        base = training_arguments(run.cfg, run.has_eval)
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
        values.update(self.trl_settings(run))
        return getattr(self.trl, self.trl_config)(**values)

    def datasets(self, run: Run) -> None:
        """Built in `prepare` (before the model loads: data errors come first)."""

    def trl_trainer(self, run: Run, cls, **kwargs):
        """`cls(...)` on the run's model, args, datasets and LoRA config, heads kept in fp32 under QLoRA."""
        trainer = cls(
            model=run.model,
            args=run.args,
            train_dataset=run.train_set,
            eval_dataset=run.eval_set,
            processing_class=run.tokenizer.hf,
            peft_config=run.peft_config,
            **kwargs,
        )
        fp32_trainables(trainer, run.cfg)
        return trainer

    def tokens(self, run: Run) -> int:
        log = run.trainer.state.log_history
        return max((int(e["num_tokens"]) for e in log if "num_tokens" in e), default=0)

    def metrics(self, run: Run) -> dict:
        extra = self.task_metrics(run)
        if run.trainer.is_world_process_zero():  # the summary table shows losses; these are the task's numbers
            shown = [
                f"{k.replace('_', ' ')} {v:.4g}" for k, v in extra.items() if isinstance(v, float) and math.isfinite(v)
            ]
            console.log(f"{self.kind}: " + ", ".join(shown))
        return extra

    def task_metrics(self, run: Run) -> dict:
        return {}

    def first_last(self, run: Run, key: str) -> tuple[float | None, float | None]:
        from zhllama.core.training.output import history

        points = history(run.trainer.state.log_history, key)
        return (points[0][1], points[-1][1]) if points else (None, None)


def fp32_trainables(trainer, cfg) -> None:
    """Undo TRL's bf16 cast of a quantized model's trainable full modules (score head, embed_tokens,
    lm_head): zhllama computes in fp32 (`bnb_4bit_compute_dtype`), and a bf16 head fed fp32 hidden
    states fails ("expected m1 and m2 to have the same dtype"). LoRA weights keep TRL's bf16."""
    if cfg.qlora is None or cfg.bf16:
        return
    for name, param in trainer.model.named_parameters():
        if param.requires_grad and "lora_" not in name:
            param.data = param.data.float()
