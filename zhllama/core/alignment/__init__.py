"""Preference alignment on TRL: reward models (`rm`), DPO (`dpo`) and RL from a reward model (`ppo`).

The tasks are imported when called: `zhllama.core.alignment.config` (the flags) must stay importable
without torch, which the CLI builds its `--help` from.
"""


def rm(cfg) -> dict:
    from zhllama.core.alignment.tasks import rm as task

    return task(cfg)


def dpo(cfg) -> dict:
    from zhllama.core.alignment.tasks import dpo as task

    return task(cfg)


def ppo(cfg) -> dict:
    from zhllama.core.alignment.tasks import ppo as task

    return task(cfg)


__all__ = ["dpo", "ppo", "rm"]
