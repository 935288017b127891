"""LongBench (v1): `{task}.jsonl` (LongBench-E: `{task}_e.jsonl`) in the official format.

The Chinese and code tasks' prompts ship with zhllama; the official `dataset2prompt.json` and
`dataset2maxlen.json` in the data folder (as in the LongBench repo) add or replace task configs,
which is how the English tasks are run.
"""

from __future__ import annotations

from pathlib import Path

from zhllama.core.assets import data_path
from zhllama.core.errors import UserError
from zhllama.core.evaluation.longbench import LongBenchSettings
from zhllama.core.paths import parse_json_line, read_json, read_text_file
from zhllama.core.plugin_api import BenchmarkPlugin

FIELDS = ("input", "context", "answers")
CATEGORIES = {  # the LongBench paper's task groups
    "single-doc": ("narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh"),
    "multi-doc": ("hotpotqa", "2wikimqa", "musique", "dureader"),
    "summarization": ("gov_report", "qmsum", "multi_news", "vcsum"),
    "few-shot": ("trec", "triviaqa", "samsum", "lsht"),
    "synthetic": ("passage_count", "passage_retrieval_en", "passage_retrieval_zh"),
    "code": ("lcc", "repobench-p"),
}
CATEGORY_OF = {task: category for category, tasks in CATEGORIES.items() for task in tasks}


class LongBench(BenchmarkPlugin):
    name = "longbench"
    description = "LongBench (v1) and LongBench-E: Chinese + code tasks shipped, English with the official configs"
    requires = ("jieba", "rouge")
    install_hint = "pip install jieba rouge"

    settings_class = LongBenchSettings  # the flags of `zhllama eval longbench` (the generic eval command)
    data_dir_help = "Folder of {task}.jsonl files (official format)."
    examples = (
        "zhllama eval longbench --model merged --data-dir longbench --output results/lb --tasks dureader,lsht",
        "zhllama eval longbench --model merged-16k --rope-scaling ntk --rope-factor 4 --max-length 15872 "
        "--data-dir longbench --output results/lb16k",
        "zhllama eval longbench --model merged --data-dir longbench-e --output results/lb-e --e --tasks lcc,repobench-p",
    )

    # ---- the generic eval command: check -> prepare -> run -> table ----------------------------
    def check(self, settings: LongBenchSettings, data_dir: Path):
        """The options, checked once against the data folder's task configs (`CheckedLongBenchSettings`)."""
        return settings.checked(self.tasks(data_dir))

    def prepare(self, data_dir: Path, settings):
        """task -> samples: every data file parsed before the model loads."""
        from zhllama.core.evaluation.longbench import load_samples

        return load_samples(self, data_dir, settings)

    def run(self, model, data_dir: Path, output: Path, settings, prepared, model_id: str) -> dict:
        from zhllama.core.evaluation.longbench import run_longbench

        return run_longbench(self, model, data_dir, output, settings, model_id=model_id, samples=prepared)

    def table(self, summary: dict, settings):
        from zhllama.core import console

        def pct(value):
            return "-" if value is None else round(value, 2)

        buckets = ("0-4k", "4-8k", "8k+") if settings.e else ()
        rows = []
        for task, v in summary["tasks"].items():
            rows.append((task, v["samples"], round(v["score"], 2), *(pct(v["buckets"][b]) for b in buckets)))
        rows += [(f"[{c}]", "", round(v, 2), *("" for _ in buckets)) for c, v in summary["categories"].items()]
        rows.append(("average", "", round(summary["average"], 2), *(pct(summary["buckets"][b]) for b in buckets)))
        title = f"{summary['benchmark']} (max length {summary['settings']['max_length']})"
        return console.table(title, ["task", "samples", "score", *buckets], rows)

    def tasks(self, data_dir: Path | None = None) -> dict[str, dict]:
        """task -> {prompt, max_new_tokens, category}: shipped configs, then the data folder's official ones."""
        configs = read_json(data_path("benchmarks", "longbench_tasks.json"))
        if data_dir is None:
            return configs
        prompts_file, maxlen_file = Path(data_dir) / "dataset2prompt.json", Path(data_dir) / "dataset2maxlen.json"
        if prompts_file.is_file() != maxlen_file.is_file():
            missing = maxlen_file if prompts_file.is_file() else prompts_file
            raise UserError(f"{missing}: missing (the official configs come as a pair)")
        if prompts_file.is_file():
            prompts, maxlen = read_json(prompts_file), read_json(maxlen_file)
            for task, prompt in prompts.items():
                if task not in CATEGORY_OF:
                    continue  # not a LongBench v1 task this tool has a metric for
                if not isinstance(maxlen.get(task), int) or not isinstance(prompt, str):
                    raise UserError(f"{maxlen_file}: no integer max length for task '{task}'")
                configs[task] = {"prompt": prompt, "max_new_tokens": maxlen[task], "category": CATEGORY_OF[task]}
        return configs

    @staticmethod
    def path(data_dir: Path, task: str, e: bool = False) -> Path:
        return Path(data_dir) / f"{task}{'_e' if e else ''}.jsonl"

    def load(self, data_dir: Path, task: str, e: bool = False) -> list[dict]:
        path = self.path(data_dir, task, e)
        if not path.is_file():
            raise UserError(f"{path}: no such file (LongBench data is {{task}}{'_e' if e else ''}.jsonl in --data-dir)")
        lines = read_text_file(path).splitlines()
        samples = []
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            sample = parse_json_line(line, f"{path}: line {n + 1}")
            missing = [f for f in FIELDS if f not in sample]
            if missing:
                raise UserError(f"{path}: line {n + 1}: missing field '{missing[0]}'")
            if not isinstance(sample["answers"], list):
                raise UserError(f"{path}: line {n + 1}: 'answers' must be a list")
            sample.setdefault("_id", str(n))
            samples.append(sample)
        if not samples:
            raise UserError(f"{path}: no samples")
        return samples
