"""Batch builders: right padding, or packing several examples into one row.

Packing puts examples back to back and restarts `position_ids` at each example; with no
`attention_mask`, transformers turns restarting position ids into a block-diagonal causal mask,
so no token attends across an example boundary and per-example losses equal the unpacked ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
NUM_TOKENS = "num_tokens"  # non-padding tokens of a batch; the trainer pops it before the forward pass


@dataclass
class PadCollator:
    pad_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * (width - n))
            lab = list(f.get("labels", f["input_ids"]))
            labels.append(lab + [IGNORE_INDEX] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
            NUM_TOKENS: sum(len(f["input_ids"]) for f in features),
        }


class Packer:
    """Greedy first-fit packing in order, fed in batches: rows of at most `max_length` tokens.

    `add` returns the rows completed so far; `finish` the last one. Each example restarts
    `position_ids`, and its first token gets no label (it predicts nothing from the previous one).
    """

    KEYS = ("input_ids", "labels", "position_ids")

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.cur = {k: [] for k in self.KEYS}

    def add(self, ids_batch, labels_batch) -> dict[str, list[list[int]]]:
        rows = {k: [] for k in self.KEYS}
        for ids, labels in zip(ids_batch, labels_batch, strict=True):
            cur = self.cur
            if cur["input_ids"] and len(cur["input_ids"]) + len(ids) > self.max_length:
                for k in rows:
                    rows[k].append(cur[k])
                cur = self.cur = {k: [] for k in self.KEYS}
            cur["input_ids"] += ids
            cur["labels"] += [IGNORE_INDEX, *labels[1:]] if cur["labels"] else list(labels)
            cur["position_ids"] += list(range(len(ids)))
        return rows

    def finish(self) -> dict[str, list[list[int]]]:
        rows = {k: [self.cur[k]] if self.cur["input_ids"] else [] for k in self.KEYS}
        self.cur = {k: [] for k in self.KEYS}
        return rows


def pack(examples: dict[str, list[list[int]]], max_length: int) -> dict[str, list[list[int]]]:
    """Pack a whole (small) set of examples at once; see `Packer`."""
    packer = Packer(max_length)
    rows = packer.add(examples["input_ids"], examples["labels"])
    last = packer.finish()
    return {k: rows[k] + last[k] for k in Packer.KEYS}


@dataclass
class PackedCollator:
    pad_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids, labels, pos = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * (width - n))
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * (width - n))
            pos.append(list(f["position_ids"]) + list(range(width - n)))  # padding is its own sequence
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "position_ids": torch.tensor(pos),
            NUM_TOKENS: sum(len(f["input_ids"]) for f in features),
        }
