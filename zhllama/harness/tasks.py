"""Local lm-eval task definitions over C-Eval folders in the official layout (offline runs).

`write_ceval_tasks(data_dir, out)` writes one YAML per subject that *includes lm-eval's own*
`ceval-valid_<subject>.yaml` (its prompt, description, few-shot sampler and metrics) and replaces
only the dataset: JSON-lines copies of the subject's val and dev CSV rows, written next to the
YAMLs and read with datasets' `json` builder (its `csv` builder refuses splits whose columns differ:
the official dev files have an `explanation` column, val files do not; here every row has the
fields id, question, A-D, answer, explanation). Run with `--include_path out --tasks zh-ceval-valid`
(the group) or one `zh-ceval-valid_<subject>`.
"""

from __future__ import annotations

import json
from pathlib import Path

from zhllama.core.errors import UserError

GROUP = "zh-ceval-valid"


def lm_eval_ceval_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / "ceval"


def ceval_subjects(data_dir: Path, split: str = "val") -> list[str]:
    subjects = sorted(p.name[: -len(f"_{split}.csv")] for p in (data_dir / split).glob(f"*_{split}.csv"))
    if not subjects:
        raise UserError(f"{data_dir / split}: no *_{split}.csv files (C-Eval's official layout expected)")
    return subjects


def _rows(path: Path) -> list[dict]:
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read CSV ({exc})") from exc
    fields = ("id", "question", "A", "B", "C", "D", "answer")
    out = []
    for n, row in enumerate(rows):
        missing = [f for f in fields if row.get(f) is None]
        if missing:
            raise UserError(f"{path}: row {n + 1}: missing column '{missing[0]}'")
        out.append({**{f: row[f] for f in fields}, "explanation": row.get("explanation") or ""})
    return out


def write_ceval_tasks(data_dir: str | Path, out: str | Path, subjects: list[str] | None = None) -> list[str]:
    """Write the task YAMLs (and the group `zh-ceval-valid`) into `out`; returns the task names."""
    data_dir, out = Path(data_dir).resolve(), Path(out)
    upstream = lm_eval_ceval_dir()
    subjects = subjects or ceval_subjects(data_dir)
    names = []
    out.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        base = upstream / f"ceval-valid_{subject}.yaml"
        if not base.is_file():
            raise UserError(f"{subject}: lm-eval has no C-Eval task for this subject ({base} missing)")
        files = {}
        for split in ("val", "dev"):
            rows = _rows(data_dir / split / f"{subject}_{split}.csv")
            files[split] = out / "data" / f"{subject}_{split}.jsonl"
            files[split].parent.mkdir(parents=True, exist_ok=True)
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            files[split].write_text(text, encoding="utf-8")
        name = f"{GROUP}_{subject}"
        config = {
            "include": str(base),
            "task": name,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {k: str(v) for k, v in files.items()}},
            "validation_split": "val",
            "fewshot_split": "dev",
        }
        (out / f"{name}.yaml").write_text(json.dumps(config, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        names.append(name)
    group = {
        "group": GROUP,
        "task": names,
        "aggregate_metric_list": [
            {"metric": m, "aggregation": "mean", "weight_by_size": True} for m in ("acc", "acc_norm")
        ],
        "metadata": {"version": 2.0},
    }
    (out / f"_{GROUP}.yaml").write_text(json.dumps(group, indent=1) + "\n", encoding="utf-8")
    return names
