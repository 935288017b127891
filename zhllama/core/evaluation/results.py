"""Predictions log (resumable), summaries per subject/category/overall, and the accuracy plot."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from zhllama.core.atomic import atomic_file


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
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
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
        with open(self.path, "a", encoding="utf-8") as f:
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
