"""The two training tasks: dataset builders that plug into `runner.train`."""

from __future__ import annotations

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.templates import get_template
from zhllama.core.training import data
from zhllama.core.training.collate import PackedCollator, PadCollator, pack
from zhllama.core.training.runner import TrainConfig, train


def _split(dataset, fraction: float, seed: int):
    if not 0 <= fraction < 1:
        raise UserError(f"--validation-split: {fraction} must be in [0, 1)")
    if fraction == 0:
        return dataset, None
    if len(dataset) < 2:
        raise UserError("--validation-split needs at least 2 examples")
    parts = dataset.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def pretrain(cfg: TrainConfig) -> dict:
    """Continued pre-training on plain text (`extra`: block_size)."""
    from datasets import Dataset

    block_size = int(cfg.extra.get("block_size", 512))
    files = data.expand_files(cfg.data, data.TEXT_SUFFIXES)

    def build(tokenizer, args):
        key = data.cache_key(tokenizer, files, {"kind": "pretrain", "block_size": block_size})
        with args.main_process_first(desc="tokenizing"):
            dataset, hit = data.cached(
                key,
                cfg.cache_dir,
                lambda: Dataset.from_dict(
                    {"input_ids": data.pretrain_blocks(tokenizer, data.read_documents(files), block_size)}
                ),
            )
        console.log(f"{'reusing cached' if hit else 'tokenized'} dataset: {len(dataset)} blocks of {block_size} tokens")
        train_set, eval_set = _split(dataset, cfg.validation_split, cfg.seed)
        return train_set, eval_set, PadCollator(tokenizer.pad_id)

    return train(cfg, build, "pretrain")


def sft(cfg: TrainConfig) -> dict:
    """Instruction tuning (`extra`: template, system_prompt, max_seq_length, packing)."""
    from datasets import Dataset

    template = get_template(cfg.extra.get("template", "llama2-zh"))
    system = cfg.extra.get("system_prompt")
    max_len = int(cfg.extra.get("max_seq_length", 512))
    packing = bool(cfg.extra.get("packing", False))
    files = data.expand_files(cfg.data, (".json", ".jsonl"))

    def build(tokenizer, args):
        settings = {"kind": "sft", "template": template.name, "system": system, "max_len": max_len}
        key = data.cache_key(tokenizer, files, settings)
        with args.main_process_first(desc="tokenizing"):
            dataset, hit = data.cached(
                key,
                cfg.cache_dir,
                lambda: Dataset.from_dict(
                    data.sft_examples(tokenizer, template, data.read_records(files), max_len, system)
                ),
            )
        console.log(f"{'reusing cached' if hit else 'tokenized'} dataset: {len(dataset)} examples")
        train_set, eval_set = _split(dataset, cfg.validation_split, cfg.seed)
        if packing:
            train_set = Dataset.from_dict(pack(train_set.to_dict(), max_len))
            if eval_set is not None:
                eval_set = Dataset.from_dict(pack(eval_set.to_dict(), max_len))
            return train_set, eval_set, PackedCollator(tokenizer.pad_id)
        return train_set, eval_set, PadCollator(tokenizer.pad_id)

    return train(cfg, build, "sft")
