"""C-Eval: 52 subjects, 4 categories; `{dev,val,test}/{subject}_{split}.csv` + subject_mapping.json."""

from __future__ import annotations

from pathlib import Path

from zhllama.plugins.benchmarks.exams import Exam, read_mapping


class CEval(Exam):
    name = "ceval"
    description = "C-Eval multiple-choice exam (52 subjects; val/test splits, 0-5 shots)"
    splits = ("val", "test", "dev")
    columns = {"id": "id", "question": "question", "A": "A", "B": "B", "C": "C", "D": "D", "answer": "answer"}

    examples = (
        "zhllama eval ceval --model merged --data-dir ceval-exam --output results/ceval --shots 5",
        "zhllama eval ceval --model merged --data-dir ceval-exam --output results/cla2 --prompt-style cla2 --template llama2-zh",
        "zhllama ceval --model merged --data-dir ceval-exam --split test --output results/ceval-test",
    )

    def mapping(self, data_dir: Path) -> dict[str, tuple[str, str]]:
        # official format: {subject: [English name, Chinese name, category]}
        return read_mapping(
            data_dir / "subject_mapping.json", "ceval_subjects.json", lambda m: {s: (v[1], v[2]) for s, v in m.items()}
        )

    def split_file(self, data_dir: Path, split: str, subject: str) -> Path:
        return data_dir / split / f"{subject}_{split}.csv"

    def subjects_in(self, data_dir: Path, split: str) -> list[str]:
        suffix = f"_{split}.csv"
        return sorted(p.name[: -len(suffix)] for p in (data_dir / split).glob(f"*{suffix}"))
