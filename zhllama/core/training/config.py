"""The configs of `zhllama pretrain` / `sft`: composed of option groups (`options.py`), one schema.

Every field carries its `--help` text in `field(metadata=...)` (`zhllama.core.schema.option`);
`zhllama.cli.training.build_command` generates a command's flags from its config class, and a YAML
`--config` goes through the same flags, so a default is declared exactly once. `validate()` runs the
checks of every group before anything is read or written.

`TrainConfig` holds every group a language-model task accepts (LoRA, optimisation, distributed,
data, long context, streaming); `PretrainConfig` and `SftConfig` add their own fields. The alignment
commands compose their configs from the groups they accept (`zhllama.core.alignment.config`).
"""

from __future__ import annotations

from dataclasses import dataclass

from zhllama.core.schema import option
from zhllama.core.training.options import (
    DEFAULT_TARGETS,
    OWNED_TRAINER_FIELDS,
    ROPE_SCALINGS,
    DataOptions,
    DistributedOptions,
    LongContextOptions,
    LoraOptions,
    OptimOptions,
    RunOptions,
    StreamingOptions,
    TemplateOptions,
    coerce,
    flag,
)

__all__ = [
    "DEFAULT_TARGETS",
    "OWNED_TRAINER_FIELDS",
    "ROPE_SCALINGS",
    "PretrainConfig",
    "SftConfig",
    "TrainConfig",
    "coerce",
    "flag",
]


@dataclass
class TrainConfig(
    StreamingOptions, LongContextOptions, DataOptions, DistributedOptions, OptimOptions, LoraOptions, RunOptions
):
    """Everything a language-model training run accepts; field names follow the CLI flags (kebab -> snake).
    A run is configured as its task's class (`PretrainConfig`, `SftConfig`), which adds the task's own fields."""


@dataclass
class PretrainConfig(TrainConfig):
    """`zhllama pretrain`: continued pre-training on plain text."""

    block_size: int = option(512, "Tokens per training block (documents are concatenated).")
    doc_separator: str = option("eos", "eos: each document ends with EOS; none: BOS only (CLA1 / early CLA2).")
    grouping: str = option(
        "stream", "stream: one token stream over all files; cla2: per file and per 1000 lines, as CLA2's script."
    )

    def checks(self):
        from zhllama.core.training.data import DOC_SEPARATORS, GROUPINGS

        return super().checks() + [
            ("block_size", self.block_size >= 1, "must be >= 1"),
            ("doc_separator", self.doc_separator in DOC_SEPARATORS, f"must be one of {', '.join(DOC_SEPARATORS)}"),
            ("grouping", self.grouping in GROUPINGS, f"must be one of {', '.join(GROUPINGS)}"),
        ]


@dataclass
class SftConfig(TemplateOptions, TrainConfig):
    """`zhllama sft`: instruction tuning with a prompt template, loss on answer tokens only."""

    max_seq_length: int = option(512, "Right-truncate examples to this many tokens.")
    packing: bool = option(False, "Pack several examples per sequence (no cross-example attention).")

    def checks(self):
        return super().checks() + [("max_seq_length", self.max_seq_length >= 1, "must be >= 1")]
