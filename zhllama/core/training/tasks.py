"""The two training tasks: dataset builders that plug into `runner.train`."""

from __future__ import annotations

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.templates import get_template
from zhllama.core.training import data
from zhllama.core.training.collate import PackedCollator, PadCollator
from zhllama.core.training.config import PretrainConfig, SftConfig, TrainConfig
from zhllama.core.training.runner import train

PRETRAIN_REFUSED = {".json": "pretrain reads plain text (.txt, one document per line) or .jsonl records with 'text'"}


def _split(dataset, fraction: float, seed: int):
    if fraction == 0:
        return dataset, None
    if len(dataset) < 2:
        raise UserError("--validation-split needs at least 2 examples")
    parts = dataset.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def _as(cls, cfg: TrainConfig):
    """`cfg` as `cls` (a plain TrainConfig with `extra` settings, as older callers build it)."""
    if isinstance(cfg, cls):
        return cfg
    import dataclasses

    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
    own = {f.name for f in dataclasses.fields(cls)} - set(values)
    return cls(**values, **{k: v for k, v in cfg.extra.items() if k in own})


def pretrain(cfg: PretrainConfig) -> dict:
    """Continued pre-training on plain text (blocks of `block_size` tokens)."""
    cfg = _as(PretrainConfig, cfg)
    cfg.validate()
    files = data.expand_files(cfg.data, data.TEXT_SUFFIXES, refuse=PRETRAIN_REFUSED)

    def build(tokenizer, args):
        if cfg.streaming:
            stream = data.pretrain_stream(tokenizer, files, cfg.block_size, cfg.doc_separator, cfg.grouping)
            return stream, None, PadCollator(tokenizer.pad_id)
        with data.main_process_first(args):
            dataset, stats = data.pretrain_dataset(
                tokenizer, files, cfg.block_size, cfg.cache_dir, cfg.doc_separator, cfg.grouping, cfg.workers
            )
        how = "reusing cached" if not stats["tokenized_files"] else "tokenized"
        console.log(
            f"{how} dataset: {len(dataset)} blocks of {cfg.block_size} tokens "
            f"({stats['tokenized_files']} file(s) tokenized, {stats['reused_files']} from the cache)"
        )
        train_set, eval_set = _split(dataset, cfg.validation_split, cfg.seed)
        return train_set, eval_set, PadCollator(tokenizer.pad_id)

    return train(cfg, build, "pretrain")


def sft(cfg: SftConfig) -> dict:
    """Instruction tuning (template, system prompt, max_seq_length, packing)."""
    cfg = _as(SftConfig, cfg)
    cfg.validate()
    template = get_template(cfg.template)
    files = data.expand_files(cfg.data, data.RECORD_SUFFIXES)

    def build(tokenizer, args):
        system, max_len = cfg.system_prompt, cfg.max_seq_length
        if cfg.streaming:
            stream = data.sft_stream(tokenizer, template, files, max_len, system, packing=cfg.packing)
            collator = PackedCollator(tokenizer.pad_id) if cfg.packing else PadCollator(tokenizer.pad_id)
            return stream, None, collator
        with data.main_process_first(args):
            dataset, stats = data.sft_dataset(tokenizer, template, files, max_len, system, cfg.cache_dir, cfg.workers)
        how = "reusing cached" if not stats["tokenized_files"] else "tokenized"
        console.log(f"{how} dataset: {len(dataset)} examples")
        train_set, eval_set = _split(dataset, cfg.validation_split, cfg.seed)
        if cfg.packing:
            with data.main_process_first(args):
                train_set = data.packed(train_set, max_len, cfg.cache_dir, ("train", cfg.validation_split, cfg.seed))
                if eval_set is not None:
                    eval_set = data.packed(eval_set, max_len, cfg.cache_dir, ("eval", cfg.validation_split, cfg.seed))
            return train_set, eval_set, PackedCollator(tokenizer.pad_id)
        return train_set, eval_set, PadCollator(tokenizer.pad_id)

    return train(cfg, build, "sft")
