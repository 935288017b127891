"""The language-model tasks, `pretrain` and `sft`: specs run by the pipeline (`runner.train`).

Both train a causal LM with zhllama's Trainer (`CountingTrainer`: it counts the real, non-padding
tokens the collators report) and report the held-out perplexity with `--validation-split`.
"""

from __future__ import annotations

import math

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.training import data
from zhllama.core.training.config import PretrainConfig, SftConfig
from zhllama.core.training.runner import Run, Task, distributed_sum, train

PRETRAIN_REFUSED = {".json": "pretrain reads plain text (.txt, one document per line) or .jsonl records with 'text'"}


def split(dataset, fraction: float, seed: int):
    """The held-out `--validation-split` (None without one)."""
    if fraction == 0:
        return dataset, None
    if len(dataset) < 2:
        raise UserError("--validation-split needs at least 2 examples")
    parts = dataset.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


class LanguageModelTask(Task):
    """What pretrain and sft share (one instance per run: `check` keeps the files it found): the counting Trainer, token totals over ranks, eval perplexity."""

    def configure(self, cfg):
        if not isinstance(cfg, self.config):  # a plain TrainConfig lacks the task's own fields
            raise TypeError(f"{self.kind} runs a {self.config.__name__}, got a {type(cfg).__name__}")
        return cfg

    def arguments(self, run: Run):
        from zhllama.core.training.arguments import training_arguments

        return training_arguments(run.cfg, run.has_eval, streaming=run.cfg.streaming)

    def trainer(self, run: Run):
        from transformers import Trainer

        from zhllama.core.training.collate import NUM_TOKENS

        progress = run.progress

        class CountingTrainer(Trainer):
            """Counts real tokens per step from the collator's NUM_TOKENS (which the model must not see)."""

            def training_step(self, model, inputs, num_items_in_batch=None):
                progress.count_batch(int(inputs.pop(NUM_TOKENS, 0)))
                return super().training_step(model, inputs, num_items_in_batch)

            def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
                inputs.pop(NUM_TOKENS, None)
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

        return CountingTrainer(
            model=run.model,
            args=run.args,
            train_dataset=run.train_set,
            eval_dataset=run.eval_set,
            data_collator=run.collator,
        )

    def tokens(self, run: Run) -> int:
        return distributed_sum(run.progress.tokens)

    def metrics(self, run: Run) -> dict:
        if run.eval_set is None:
            return {}
        metrics = run.trainer.evaluate()
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
        return {k: v for k, v in metrics.items() if k.startswith("eval_")}

    def cached(self, run: Run, dataset, stats: dict, what: str):
        """Log how the dataset was built, then hold out the validation split."""
        how = "reusing cached" if not stats["tokenized_files"] else "tokenized"
        console.log(f"{how} dataset: {what}")
        return split(dataset, run.cfg.validation_split, run.cfg.seed)


class Pretrain(LanguageModelTask):
    """Continued pre-training on plain text (blocks of `block_size` tokens)."""

    kind, config = "pretrain", PretrainConfig

    def check(self, cfg):
        self.files = data.expand_files(cfg.data, data.TEXT_SUFFIXES, refuse=PRETRAIN_REFUSED)

    def datasets(self, run: Run) -> None:
        from zhllama.core.training.collate import PadCollator

        cfg, tokenizer = run.cfg, run.tokenizer
        run.collator = PadCollator(tokenizer.pad_id)
        if cfg.streaming:
            run.train_set = data.pretrain_stream(tokenizer, self.files, cfg.block_size, cfg.doc_separator, cfg.grouping)
            return
        with data.main_process_first(run.args):
            dataset, stats = data.pretrain_dataset(
                tokenizer, self.files, cfg.block_size, cfg.cache_dir, cfg.doc_separator, cfg.grouping, cfg.workers
            )
        what = (
            f"{len(dataset)} blocks of {cfg.block_size} tokens "
            f"({stats['tokenized_files']} file(s) tokenized, {stats['reused_files']} from the cache)"
        )
        run.train_set, run.eval_set = self.cached(run, dataset, stats, what)


class Sft(LanguageModelTask):
    """Instruction tuning (template, system prompt, max_seq_length, packing)."""

    kind, config = "sft", SftConfig

    def check(self, cfg):
        from zhllama.core.templates import get_template

        self.template = get_template(cfg.template)
        self.files = data.expand_files(cfg.data, data.RECORD_SUFFIXES)

    def datasets(self, run: Run) -> None:
        from zhllama.core.training.collate import PackedCollator, PadCollator

        cfg, tokenizer = run.cfg, run.tokenizer
        system, max_len = cfg.system_prompt, cfg.max_seq_length
        run.collator = PackedCollator(tokenizer.pad_id) if cfg.packing else PadCollator(tokenizer.pad_id)
        if cfg.streaming:
            run.train_set = data.sft_stream(tokenizer, self.template, self.files, max_len, system, packing=cfg.packing)
            return
        with data.main_process_first(run.args):
            dataset, stats = data.sft_dataset(
                tokenizer, self.template, self.files, max_len, system, cfg.cache_dir, cfg.workers
            )
        run.train_set, run.eval_set = self.cached(run, dataset, stats, f"{len(dataset)} examples")
        if cfg.packing:
            with data.main_process_first(run.args):
                key = (cfg.validation_split, cfg.seed)
                run.train_set = data.packed(run.train_set, max_len, cfg.cache_dir, ("train", *key))
                if run.eval_set is not None:
                    run.eval_set = data.packed(run.eval_set, max_len, cfg.cache_dir, ("eval", *key))


def pretrain(cfg: PretrainConfig) -> dict:
    """Continued pre-training on plain text (blocks of `block_size` tokens)."""
    return train(Pretrain(), cfg)


def sft(cfg: SftConfig) -> dict:
    """Instruction tuning (template, system prompt, max_seq_length, packing)."""
    return train(Sft(), cfg)
