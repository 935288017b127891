"""Side by side: `zhllama eval ceval --mode logits` vs lm-eval's C-Eval task, same model, same items.

    python -m zhllama.harness.compare --model M --data-dir ceval --subjects a,b --shots 5 --output cmp.json

Three runs over one loaded model:
- `zhllama`: zhllama's logits mode (default prompt style): the next-token logits after the prompt,
  the answer is the letter whose pieces ('▁X' and 'X') have the largest summed logit.
- `lm-eval`: lm-eval's own `ceval-valid_<subject>` task (local data): log P(" X" | prompt), prompt
  with lm-eval's description and few-shot format ("... 答案： A").
- `lm-eval, zhllama's prompt`: the same lm-eval task with only the description and the target
  delimiter changed to zhllama's (header "...考试的单项选择题...", answers glued to "答案："): if it
  agrees with `zhllama` on an item where `lm-eval` does not, that difference is the prompt format.
Each item's reason: "prompt format" (fixed by zhllama's prompt) or "scoring" (log-softmax of the
letter's tokens vs summed letter-piece logits, which differ only when a letter has several pieces).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zhllama.harness.tasks import GROUP, write_ceval_tasks

VARIANT = "zhp-ceval-valid"


def _variant_tasks(out: Path, names: list[str], headers: dict[str, str]) -> list[str]:
    variants = []
    for name in names:
        subject = name[len(GROUP) + 1 :]
        task = f"{VARIANT}_{subject}"
        config = {"include": str(out / f"{name}.yaml"), "task": task, "description": headers[subject]}
        config["target_delimiter"] = ""
        (out / f"{task}.yaml").write_text(json.dumps(config, ensure_ascii=False) + "\n", encoding="utf-8")
        variants.append(task)
    return variants


def _lm_eval_predictions(lm, tasks: list[str], manager, shots: int, limit: int | None) -> dict:
    from lm_eval import simple_evaluate

    results = simple_evaluate(
        model=lm, tasks=tasks, num_fewshot=shots, limit=limit, task_manager=manager, log_samples=True
    )
    out = {}
    for task, samples in results["samples"].items():
        subject = task.split("_", 1)[1]
        for s in samples:
            scores = [float(r[0][0]) for r in s["resps"]]
            out[(subject, int(s["doc_id"]))] = "ABCD"[max(range(4), key=lambda i: scores[i])]
    return out


def compare(model: str, data_dir: Path, subjects: list[str], shots: int, limit: int | None, work: Path) -> dict:
    from lm_eval.tasks import TaskManager

    from zhllama.core.engine import open_model
    from zhllama.core.evaluation.runner import McqSettings, run_mcq
    from zhllama.harness import register
    from zhllama.harness.lm import ZhllamaLM
    from zhllama.plugins.benchmarks.ceval import CEval

    register()
    bench = CEval()
    questions, _dev, names, _cats = bench.load(data_dir, "val")
    names_written = write_ceval_tasks(data_dir, work / "tasks", subjects)
    headers = {s: bench.header(s, names, "default") for s in subjects}
    variants = _variant_tasks(work / "tasks", names_written, headers)
    loaded = open_model(model)
    try:
        settings = McqSettings(shots=shots, subjects=",".join(subjects), limit=limit)
        run_mcq(bench, loaded, data_dir, work / "zhllama", settings)
        zh = {}
        for line in (work / "zhllama" / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            index = next(i for i, q in enumerate(questions[r["subject"]]) if q.qid == str(r["id"]))
            zh[(r["subject"], index)] = (r["prediction"], r["gold"])
        lm = ZhllamaLM(loaded=loaded)
        manager = TaskManager(include_path=[str(work / "tasks")])
        stock = _lm_eval_predictions(lm, names_written, manager, shots, limit)
        fixed = _lm_eval_predictions(lm, variants, manager, shots, limit)
    finally:
        loaded.close()
    items = []
    for key in sorted(k for k in zh if k in stock):  # zhllama's run may hold more (it resumes)
        ours, gold = zh[key]
        row = {"subject": key[0], "index": key[1], "gold": gold, "zhllama": ours, "lm_eval": stock[key]}
        row["lm_eval_zhllama_prompt"] = fixed[key]
        if ours != stock[key]:
            row["reason"] = "prompt format" if fixed[key] == ours else "scoring"
        items.append(row)
    n = len(items)

    def acc(k):
        return sum(r[k] == r["gold"] for r in items) / n

    return {
        "model": model,
        "shots": shots,
        "items": n,
        "accuracy": {k: acc(k) for k in ("zhllama", "lm_eval", "lm_eval_zhllama_prompt")},
        "agree_zhllama_lm_eval": sum(r["zhllama"] == r["lm_eval"] for r in items) / n,
        "agree_zhllama_lm_eval_zhllama_prompt": sum(r["zhllama"] == r["lm_eval_zhllama_prompt"] for r in items) / n,
        "differences": {
            reason: sum(r.get("reason") == reason for r in items) for reason in ("prompt format", "scoring")
        },
        "per_item": items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--subjects", required=True)
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (task files, zhllama's run).")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    result = compare(args.model, args.data_dir, args.subjects.split(","), args.shots, args.limit, args.work)
    args.output.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "per_item"}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
