"""Predictions log (resumable), summaries per subject/category/overall, and the accuracy plot."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

from zhllama.core.atomic import atomic_file
from zhllama.core.errors import UserError

LOG_NAME = "predictions.jsonl"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_folder(output: Path, inputs: list[Path] = ()) -> None:
    """Refuse an --output that is a file, holds a non-regular predictions log, or overlaps an input."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: --output is an existing file; it must be a results folder")
    log = output / LOG_NAME
    if log.is_symlink() or (log.exists() and not log.is_file()):
        raise UserError(f"{log}: not a regular file (a symlink or folder); refusing to append through it")
    resolved = output.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if _inside(resolved, source) or _inside(source, resolved):
            raise UserError(f"{output}: --output must not be, contain or sit inside the input {item}")


def prompt_hash(settings: dict, prompt_ids: list[int]) -> str:
    """Identifies one scored prompt under one set of settings (model, mode, style ...)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(json.dumps(prompt_ids).encode())
    return h.hexdigest()[:16]


class PredictionLog:
    """`predictions.jsonl`, appended batch by batch so an interrupted run resumes where it stopped."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[tuple[str, str, str], dict] = {}
        check_output_folder(path.parent)
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); not a zhllama predictions log"
                ) from exc
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interruption is simply redone
                self.records[self.key(record)] = record

    @staticmethod
    def key(record: dict) -> tuple[str, str, str]:
        return record["subject"], str(record["id"]), record["prompt_hash"]

    def has(self, subject: str, qid: str, phash: str) -> bool:
        return (subject, qid, phash) in self.records

    def append(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_NOFOLLOW: never append through a symlink put in place after the checks
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise UserError(f"{self.path}: is a symlink; refusing to append through it") from exc
        with open(fd, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records[self.key(record)] = record
            f.flush()


def summarize(records: list[dict], categories: dict[str, str], score_key: str = "correct") -> dict:
    """correct/total/accuracy (percent) per subject, per category and overall."""
    per_subject: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.get(score_key) is not None:
            per_subject[r["subject"]].append(float(r[score_key]))

    def block(values: list[float]) -> dict:
        total = len(values)
        correct = sum(values)
        return {"correct": correct, "total": total, "accuracy": 100.0 * correct / total if total else 0.0}

    per_category: dict[str, list[float]] = defaultdict(list)
    for subject, values in per_subject.items():
        per_category[categories.get(subject, "Other")].extend(values)
    everything = [v for values in per_subject.values() for v in values]
    return {
        "subjects": {s: block(v) for s, v in sorted(per_subject.items())},
        "categories": {c: block(v) for c, v in sorted(per_category.items())},
        "overall": block(everything),
    }


def write_json(path: Path, data) -> None:
    with atomic_file(path) as f:
        f.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def plot_categories(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["categories"])
    values = [summary["categories"][n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.5), dpi=100)
    ax.bar(names, values, color="#4c72b0")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(i, v + 1, f"{v:.1f}", ha="center")
    fig.tight_layout()
    with atomic_file(path, mode="wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
