"""CMMLU: 67 subjects, 5 categories (a China-specific subject counts only there); `{dev,test}/{subject}.csv`."""

from __future__ import annotations

from pathlib import Path

from zhllama.plugins.benchmarks.exams import Exam, read_mapping
from zhllama.plugins.benchmarks.prompt_styles import Cla2Style, OfficialStyle, PromptStyle


def _from_official(m: dict) -> dict[str, tuple[str, str]]:
    """The CMMLU authors' categories.py as JSON (name_en2zh, subcategories, categories), or our flat form."""
    if "name_en2zh" not in m:
        return {s: (v[0], v[1]) for s, v in m.items()}
    china = set(m["categories"]["China specific"])
    out = {}
    for subject, subs in m["subcategories"].items():
        if any(s in china for s in subs):
            category = "China specific"
        else:
            category = next(c for c, members in m["categories"].items() if any(s in members for s in subs))
        out[subject] = (m["name_en2zh"][subject], category)
    return out


class CMMLU(Exam):
    name = "cmmlu"
    description = "CMMLU multiple-choice exam (67 subjects; dev/test splits)"
    splits = ("test", "dev")
    # cla2: the CLA2 CMMLU evaluator's system prompt (Chinese sentence only) and its default
    # --constrained_decoding False, i.e. free generation; official: the CMMLU authors' header
    prompt_styles = {
        "default": PromptStyle(),
        "cla2": Cla2Style(system="你是一个乐于助人的助手。", mode="generate"),
        "official": OfficialStyle(),
    }
    columns = {"id": "", "question": "Question", "A": "A", "B": "B", "C": "C", "D": "D", "answer": "Answer"}

    examples = (
        "zhllama eval cmmlu --model merged --data-dir cmmlu --output results/cmmlu --prompt-style official",
        "zhllama eval cmmlu --model merged --data-dir cmmlu --output results/cmmlu-cla2 --prompt-style cla2",
    )

    def mapping(self, data_dir: Path) -> dict[str, tuple[str, str]]:
        return read_mapping(data_dir / "subject_mapping.json", "cmmlu_subjects.json", _from_official)

    def split_file(self, data_dir: Path, split: str, subject: str) -> Path:
        return data_dir / split / f"{subject}.csv"

    def subjects_in(self, data_dir: Path, split: str) -> list[str]:
        return sorted(p.stem for p in (data_dir / split).glob("*.csv"))
