"""Predictions log (resumable), summaries per subject/category/overall, and the accuracy plot."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from zhllama.core import paths
from zhllama.core.appendlog import AppendLog
from zhllama.core.atomic import atomic_file

LOG_NAME = "predictions.jsonl"
LOG_FIELDS = ("subject", "id", "prompt_hash")


def check_output_folder(output: Path, inputs: list[Path] = ()) -> None:
    """Refuse an --output that is a file, overlaps an input (`paths.check_output`: resolved paths,
    symlinks, hard links), or holds a predictions log that is not one (checked before any load)."""
    paths.check_output_folder(output, inputs)
    PredictionLog(Path(output) / LOG_NAME, report=False)  # validated now, before a model is loaded


def prompt_hash(settings: dict, prompt_ids: list[int]) -> str:
    """Identifies one scored prompt under one set of settings (model, mode, style ...)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(json.dumps(prompt_ids).encode())
    return h.hexdigest()[:16]


def _key(record: dict) -> tuple[str, str, str]:
    return str(record["subject"]), str(record["id"]), str(record["prompt_hash"])


class PredictionLog(AppendLog):
    """`predictions.jsonl`, appended batch by batch (fsynced) so an interrupted run resumes where it
    stopped; a torn last line is dropped and redone, any other bad line is an error naming it."""

    def __init__(self, path: Path, report: bool = True):
        paths.check_output_folder(Path(path).parent, [])
        super().__init__(
            path,
            key=_key,
            fields=LOG_FIELDS,
            what="zhllama predictions log",
            hint="choose another --output, or remove the file to start over",
            report=report,
        )

    @staticmethod
    def key(record: dict) -> tuple[str, str, str]:  # type: ignore[override]
        return _key(record)

    def has(self, subject: str, qid: str, phash: str) -> bool:  # type: ignore[override]
        return (str(subject), str(qid), str(phash)) in self.records


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
