"""LongBench (v1), Chinese and code tasks: `{task}.jsonl` in the official format."""

from __future__ import annotations

import json
from pathlib import Path

from zhllama.core.assets import data_path
from zhllama.core.errors import UserError

FIELDS = ("input", "context", "answers")


class LongBench:
    name = "longbench"
    description = "LongBench Chinese + code tasks (dureader, multifieldqa_zh, vcsum, lsht, passage_retrieval_zh, lcc, repobench-p)"
    requires = ("jieba", "rapidfuzz")
    install_hint = "pip install jieba rapidfuzz"
    kind = "longbench"

    def tasks(self) -> dict[str, dict]:
        """task -> {prompt, max_new_tokens, category} (the official configs' values, shipped)."""
        return json.loads(data_path("benchmarks", "longbench_tasks.json").read_text(encoding="utf-8"))

    def load(self, data_dir: Path, task: str) -> list[dict]:
        path = Path(data_dir) / f"{task}.jsonl"
        if not path.is_file():
            raise UserError(f"{path}: no such file (LongBench data is {{task}}.jsonl in --data-dir)")
        samples = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {n + 1}: malformed JSON ({exc.msg})") from exc
            missing = [f for f in FIELDS if f not in sample]
            if missing:
                raise UserError(f"{path}: line {n + 1}: missing field '{missing[0]}'")
            if not isinstance(sample["answers"], list):
                raise UserError(f"{path}: line {n + 1}: 'answers' must be a list")
            sample.setdefault("_id", str(n))
            samples.append(sample)
        return samples
