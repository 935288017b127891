"""Settings of `zhllama rm`, `zhllama dpo` and `zhllama ppo`, composed of the training option groups.

They take the groups of `zhllama.core.training.options` that TRL's trainers honour (run, LoRA/QLoRA/
full, optimisation, distributed, the held-out split, template) and leave out long context, streaming
and the tokenized-data cache (`--cache-dir`, `--preprocessing-workers`), so those flags are not
offered; each class adds its own fields, and `zhllama.cli.training.build_command` generates the Typer
flags from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zhllama.core.schema import option
from zhllama.core.training.options import (
    DistributedOptions,
    LoraOptions,
    OptimOptions,
    RunOptions,
    SplitOptions,
    TemplateOptions,
)

# TRL 1.16 DPOTrainer's loss types (`DPOConfig.loss_type`); a test checks this list against TRL's source.
DPO_LOSSES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


@dataclass
class PreferenceConfig(TemplateOptions, SplitOptions, DistributedOptions, OptimOptions, LoraOptions, RunOptions):
    """What the three commands share: every group but long context, streaming and the tokenized-data cache
    (pairs and prompts are tokenized in process, not through the Arrow cache), plus the template (as sft's)."""

    max_seq_length: int = option(512, "Longest prompt + answer in tokens; longer pairs/prompts are skipped.")

    def checks(self):
        return super().checks() + [("max_seq_length", self.max_seq_length >= 2, "must be >= 2")]


@dataclass
class RmConfig(PreferenceConfig):
    """`zhllama rm`: a reward model (sequence classification, one score) from preference pairs."""

    center_rewards_coefficient: float | None = option(
        None, "Push the mean reward towards 0 with this weight (Eisenstein et al.; e.g. 0.01)."
    )

    def checks(self):
        ok = self.center_rewards_coefficient is None or self.center_rewards_coefficient > 0
        return super().checks() + [("center_rewards_coefficient", ok, "must be > 0")]


@dataclass
class DpoConfig(PreferenceConfig):
    """`zhllama dpo`: direct preference optimisation (TRL DPOTrainer)."""

    loss: str = option("sigmoid", f"TRL loss type(s), comma-separated to combine: {', '.join(DPO_LOSSES)}.")
    loss_weights: str | None = option(None, "Weights of combined --loss types, comma-separated (default all 1).")
    beta: float = option(0.1, "DPO beta: higher keeps the policy closer to the reference.")
    label_smoothing: float = option(0.0, "Label smoothing for the robust / exo_pair losses.")

    def losses(self) -> list[str]:
        return [name.strip() for name in self.loss.split(",") if name.strip()]

    def weights(self) -> list[float] | None:
        if self.loss_weights is None:
            return None
        return [float(w) for w in self.loss_weights.split(",") if w.strip()]

    def checks(self):
        losses = self.losses()
        unknown = [name for name in losses if name not in DPO_LOSSES]
        try:
            weights = self.weights()
            weights_ok = weights is None or (len(weights) == len(losses) and all(w >= 0 for w in weights))
        except ValueError:
            weights_ok = False
        return super().checks() + [
            ("loss", bool(losses) and not unknown, f"is not a TRL DPO loss (choose from {', '.join(DPO_LOSSES)})"),
            ("loss_weights", weights_ok, "must be one non-negative number per --loss type"),
            ("beta", self.beta > 0, "must be > 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 0.5, "must be in [0, 0.5)"),
            ("label_smoothing", "exo_pair" not in losses or self.label_smoothing > 0, "must be > 0 for exo_pair"),
        ]


@dataclass
class PpoConfig(PreferenceConfig):
    """`zhllama ppo`: RL from a reward model with KL control (TRL RLOOTrainer; TRL 1.16 has no PPOTrainer)."""

    reward_model: Path = option(
        None, "Reward model: a `zhllama rm` output (LoRA adapter or full model folder).", required=True
    )
    num_generations: int = option(4, "Completions sampled per prompt (RLOO's leave-one-out baseline).")
    max_completion_length: int = option(128, "Longest sampled completion in tokens.")
    kl_coef: float = option(0.05, "KL penalty coefficient (beta) against the reference policy; 0 disables it.")
    temperature: float = option(1.0, "Sampling temperature of the policy.")

    def checks(self):
        return super().checks() + [
            ("num_generations", self.num_generations >= 2, "must be >= 2 (the baseline is the other samples)"),
            ("max_completion_length", self.max_completion_length >= 1, "must be >= 1"),
            ("kl_coef", self.kl_coef >= 0, "must be >= 0"),
            ("temperature", self.temperature > 0, "must be > 0"),
        ]
