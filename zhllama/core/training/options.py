"""Option groups of a training run; each task's config is composed of the groups it accepts.

As in axolotl's composed config, a group is a dataclass of fields (flags, help text and defaults via
`zhllama.core.schema.option`) with its own range checks (`checks`), cross-field rules (`rules`) and
the input paths it names (`inputs`, which the output may not be or contain). A task leaves out a
group it cannot honour instead of refusing its flags: rm / dpo / ppo have no long-context or
streaming group, so `zhllama dpo --help` lists neither. Every hook calls `super()`, so a composed
config runs the hooks of all its groups.

This module imports neither Typer nor torch (the CLI builds `--help` from it).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.schema import option

DEFAULT_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
ROPE_SCALINGS = ("linear", "yarn")

Check = tuple[str, bool, str]  # (field, ok, requirement)


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


@dataclass
class OptionGroup:
    """The root of every group: validation runs the hooks of all groups a config is composed of."""

    def checks(self) -> list[Check]:
        """(field, ok, requirement) for every value range."""
        return []

    def rules(self) -> None:
        """Cross-field rules; raise a one-line UserError."""

    def inputs(self) -> list[Path | None]:
        """Paths this group reads (the output may not be or contain them)."""
        return []

    def validate(self) -> None:
        """Raise a one-line UserError for the first bad value (before anything is read or written)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{flag(f.name)}: {value} is not a finite number")
        for name, ok, requirement in self.checks():
            if not ok:
                raise UserError(f"{flag(name)}: {getattr(self, name)} {requirement}")
        self.rules()


@dataclass
class RunOptions(OptionGroup):
    """What every run reads and writes."""

    model: Path = option(None, "Base model folder (HF layout).", "--model", "-m", required=True)
    output: Path = option(
        None, "Output folder (adapter or full model, summary, loss.png).", "--output", "-o", required=True
    )
    data: list[Path] = option(None, "Data file(s) or folder(s).", "--data", "-d", required=True, factory=list)
    tokenizer: Path | None = option(None, "Tokenizer folder (default: the model's); a larger one resizes the model.")
    resume: bool = option(False, "Continue from the newest complete checkpoint in --output.")
    force: bool = option(False, "Replace an existing non-empty --output.")

    def inputs(self):
        return [*super().inputs(), self.model, self.tokenizer, *self.data]


@dataclass
class LoraOptions(OptionGroup):
    """LoRA, QLoRA (a bitsandbytes base), a continued adapter, or full-parameter training."""

    lora_rank: int = option(64, "LoRA rank r.")
    lora_alpha: int = option(128, "LoRA alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    lora_targets: str = option(DEFAULT_TARGETS, "Comma-separated module names that get LoRA.")
    modules_to_save: str = option("embed_tokens,lm_head", "Modules trained fully and saved in the adapter.")
    full: bool = option(False, "Full-parameter training instead of LoRA.")
    qlora: int | None = option(None, "Load the base in 4 or 8 bit (bitsandbytes) and train LoRA on it.")
    adapter: Path | None = option(None, "Continue training this existing LoRA adapter.")

    def checks(self):
        return super().checks() + [
            ("lora_rank", self.full or self.lora_rank >= 1, "must be >= 1"),
            ("lora_alpha", self.full or self.lora_alpha > 0, "must be > 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("qlora", self.qlora in (None, 4, 8), "is not 4 or 8"),
        ]

    def rules(self):
        super().rules()
        if self.full and self.qlora is not None:
            raise UserError("--full and --qlora cannot be combined (a quantized base cannot be fully trained)")

    def inputs(self):
        return [*super().inputs(), self.adapter]

    def targets(self) -> list[str]:
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()]

    def saved_modules(self) -> list[str]:
        return [m.strip() for m in self.modules_to_save.split(",") if m.strip()]


@dataclass
class OptimOptions(OptionGroup):
    """The optimisation: the TrainingArguments zhllama maps, and any other one via --trainer-arg."""

    learning_rate: float = option(2e-4, "Peak learning rate.")
    num_train_epochs: float = option(1.0, "Epochs (ignored when --max-steps > 0).")
    max_steps: int = option(-1, "Total optimizer steps (-1: from epochs).")
    per_device_train_batch_size: int = option(1, "Batch size per device.")
    per_device_eval_batch_size: int = option(1, "Eval batch size per device.")
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step.")
    lr_scheduler_type: str = option("cosine", "linear, cosine, constant, ... (transformers' SchedulerType).")
    warmup_ratio: float = option(0.05, "Share of steps used for warm-up.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float = option(1.0, "Gradient clipping norm (0: no clipping).")
    optim: str = option("adamw_torch", "Optimizer (transformers' OptimizerNames: adamw_torch, sgd, adafactor, ...).")
    adam_beta1: float = option(0.9, "Adam beta1.")
    adam_beta2: float = option(0.999, "Adam beta2.")
    adam_epsilon: float = option(1e-8, "Adam epsilon.")
    logging_steps: int = option(10, "Log every N steps.")
    save_steps: int = option(200, "Checkpoint every N steps.")
    eval_steps: int | None = option(None, "Evaluate every N steps (needs --validation-split).")
    save_total_limit: int | None = option(3, "Keep at most N checkpoints.")
    seed: int = option(42, "Random seed.")
    bf16: bool = option(False, "bfloat16 mixed precision.")
    fp16: bool = option(False, "float16 mixed precision (GPU).")
    gradient_checkpointing: bool = option(False, "Trade compute for memory.")
    torch_compile: bool = option(False, "Compile the model with torch.compile.")
    neftune_noise_alpha: float | None = option(None, "NEFTune: noise on the input embeddings (e.g. 5).")
    attn: str = option("sdpa", "Attention implementation: sdpa, flash_attention_2 or eager.")
    report_to: str = option("none", "Comma-separated loggers (tensorboard, wandb) or none.")
    trainer_arg: list[str] = option(
        None,
        "Any other TrainingArguments field as KEY=VALUE (repeatable), e.g. --trainer-arg label_smoothing_factor=0.1.",
        "--trainer-arg",
        factory=list,
    )

    def checks(self):
        positive = ("learning_rate", "adam_epsilon")
        at_least_one = (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_steps",
        )
        rows = [(name, getattr(self, name) > 0, "must be > 0") for name in positive]
        rows += [(name, getattr(self, name) >= 1, "must be >= 1") for name in at_least_one]
        return (
            super().checks()
            + rows
            + [
                ("num_train_epochs", self.num_train_epochs > 0 or self.max_steps > 0, "must be > 0"),
                ("max_steps", self.max_steps == -1 or self.max_steps >= 1, "must be -1 (from epochs) or >= 1"),
                ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
                ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
                ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0"),
                ("adam_beta1", 0 <= self.adam_beta1 < 1, "must be in [0, 1)"),
                ("adam_beta2", 0 <= self.adam_beta2 < 1, "must be in [0, 1)"),
                ("eval_steps", self.eval_steps is None or self.eval_steps >= 1, "must be >= 1"),
                ("save_total_limit", self.save_total_limit is None or self.save_total_limit >= 1, "must be >= 1"),
                (
                    "neftune_noise_alpha",
                    self.neftune_noise_alpha is None or self.neftune_noise_alpha > 0,
                    "must be > 0",
                ),
            ]
        )

    def rules(self):
        super().rules()
        if self.bf16 and self.fp16:
            raise UserError("--bf16 and --fp16 cannot be combined")
        self.check_loggers()
        self.trainer_overrides()

    def check_loggers(self) -> None:
        """Every `--report-to` logger is importable (transformers would fail only after loading)."""
        from zhllama.core.registry import missing_modules

        for name in (n.strip() for n in self.report_to.split(",")):
            if name in ("", "none", "all"):
                continue
            if missing_modules((name,)):  # the integrations transformers knows are named after their package
                raise UserError(f"--report-to {name}: the {name} package is not installed (pip install {name})")

    def trainer_overrides(self) -> dict:
        """`--trainer-arg KEY=VALUE` values, typed and checked against TrainingArguments' fields."""
        if not self.trainer_arg:
            return {}
        from transformers import TrainingArguments

        fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
        hints = typing.get_type_hints(TrainingArguments)
        out = {}
        for item in self.trainer_arg:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise UserError(f"--trainer-arg {item}: expected KEY=VALUE")
            if key not in fields:
                from zhllama.core.errors import did_you_mean

                raise UserError(f"--trainer-arg {key}: not a TrainingArguments field{did_you_mean(key, fields)}")
            if key in OWNED_TRAINER_FIELDS:
                raise UserError(f"--trainer-arg {key}: set by zhllama ({OWNED_TRAINER_FIELDS[key]})")
            out[key] = coerce(key, raw.strip(), hints[key])
        return out


@dataclass
class DistributedOptions(OptionGroup):
    """Processes and collectives: DeepSpeed, the DDP timeout, data-loader workers."""

    dataloader_num_workers: int = option(0, "DataLoader worker processes.")
    ddp_timeout: int = option(1800, "Timeout (s) of distributed collectives (CLA2 uses 30000 for long data steps).")
    deepspeed: str | None = option(None, "DeepSpeed JSON config, or zero2 / zero3 for the shipped ones.")

    def checks(self):
        return super().checks() + [
            ("dataloader_num_workers", self.dataloader_num_workers >= 0, "must be >= 0"),
            ("ddp_timeout", self.ddp_timeout >= 1, "must be >= 1"),
        ]

    def inputs(self):
        return [*super().inputs(), self.deepspeed]


@dataclass
class LongContextOptions(OptionGroup):
    """RoPE scaling and the trained context length (Chinese-LLaMA-2-16K / 64K recipes)."""

    rope_scaling: str | None = option(None, "Train with RoPE scaling: linear (position interpolation) or yarn.")
    rope_factor: float | None = option(None, "RoPE scaling factor (e.g. 4 for 4K -> 16K).")
    model_max_length: int | None = option(None, "Context length the trained model is for (max_position_embeddings).")

    def checks(self):
        return super().checks() + [
            ("rope_scaling", self.rope_scaling in (None, *ROPE_SCALINGS), f"must be one of {', '.join(ROPE_SCALINGS)}"),
            ("rope_factor", self.rope_factor is None or self.rope_factor > 1, "must be > 1"),
            ("model_max_length", self.model_max_length is None or self.model_max_length >= 1, "must be >= 1"),
        ]

    def rules(self):
        super().rules()
        if (self.rope_scaling is None) != (self.rope_factor is None):
            raise UserError("--rope-scaling and --rope-factor go together (e.g. --rope-scaling linear --rope-factor 4)")


@dataclass
class SplitOptions(OptionGroup):
    """The held-out split (every task; rm/dpo/ppo take only this part of the data group)."""

    validation_split: float = option(0.0, "Fraction held out for evaluation (perplexity).")

    def checks(self):
        return super().checks() + [("validation_split", 0 <= self.validation_split < 1, "must be in [0, 1)")]


@dataclass
class DataOptions(SplitOptions):
    """The held-out split and the tokenized-data cache (the language-model tasks' data pipeline)."""

    cache_dir: Path | None = option(None, "Tokenized-data cache (default ~/.cache/zhllama/datasets).")
    preprocessing_workers: int | None = option(None, "Processes that tokenize (default: the number of cores).")

    def checks(self):
        ok = self.preprocessing_workers is None or self.preprocessing_workers >= 1
        return super().checks() + [("preprocessing_workers", ok, "must be >= 1")]

    def inputs(self):
        return [*super().inputs(), self.cache_dir]

    @property
    def workers(self) -> int:
        from zhllama.core.training.data import default_workers

        return self.preprocessing_workers or default_workers()


@dataclass
class StreamingOptions(OptionGroup):
    """Tokenize on the fly (composed with the optimisation and data groups)."""

    streaming: bool = option(False, "Tokenize on the fly (IterableDataset, no cache; needs --max-steps).")

    def rules(self):
        super().rules()
        if self.streaming and self.max_steps < 1:
            raise UserError("--streaming needs --max-steps (a stream has no length to count epochs by)")
        if self.streaming and self.validation_split > 0:
            raise UserError("--streaming cannot hold out a --validation-split (use a separate eval run)")


@dataclass
class TemplateOptions(OptionGroup):
    """The prompt template of instruction and preference data."""

    template: str = option("llama2-zh", "Prompt template (see `zhllama plugins`).")
    system_prompt: str | None = option(None, "Override the template's system prompt.")


# TrainingArguments fields zhllama derives itself: overriding them would break the output layout.
OWNED_TRAINER_FIELDS = {
    "output_dir": "from --output",
    "remove_unused_columns": "the collators need every column",
    "use_cpu": "from the machine",
    "disable_tqdm": "zhllama draws its own progress",
    "deepspeed": "use --deepspeed",
}


def coerce(key: str, raw: str, annotation) -> object:
    """`raw` as a value of the field's type (bool, int, float, str, enums, optional, lists)."""
    import enum

    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if raw.lower() in ("none", "null") and type(None) in typing.get_args(annotation):
        return None
    errors = []
    for kind in options:
        origin = typing.get_origin(kind) or kind
        try:
            if kind is bool:
                if raw.lower() in ("true", "1", "yes"):
                    return True
                if raw.lower() in ("false", "0", "no"):
                    return False
                raise ValueError("expected true or false")
            if kind is int:
                return int(raw)
            if kind is float:
                value = float(raw)
                if not math.isfinite(value):
                    raise ValueError("not a finite number")
                return value
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                return kind(raw).value
            if origin in (list, dict):
                import yaml

                value = yaml.safe_load(raw)
                if origin is list and isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                if not isinstance(value, origin):
                    raise ValueError(f"expected a {origin.__name__}")
                return value
            if kind is str:
                return raw
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
    raise UserError(f"--trainer-arg {key}={raw}: {errors[0] if errors else 'unsupported value'}")
