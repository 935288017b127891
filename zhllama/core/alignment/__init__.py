"""Preference alignment on TRL: reward models (`rm`), DPO (`dpo`) and RL from a reward model (`ppo`)."""

from zhllama.core.alignment.tasks import dpo, ppo, rm

__all__ = ["dpo", "ppo", "rm"]
