"""Run LongBench tasks: official prompts, middle truncation to --max-length, greedy generation, scores."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import UserError, unknown_choice
from zhllama.core.evaluation.longbench_metrics import score_sample
from zhllama.core.evaluation.results import PredictionLog, prompt_hash, write_json

NO_TEMPLATE_TASKS = ("lsht", "lcc", "repobench-p", "trec", "triviaqa", "samsum")  # as the official pred.py


def truncate_middle(ids: list[int], max_length: int) -> list[int]:
    """Keep the first and last halves when a prompt is longer than `max_length` tokens."""
    if len(ids) <= max_length:
        return ids
    half = max_length // 2
    return ids[:half] + ids[len(ids) - (max_length - half) :]


def build_ids(tokenizer, prompt: str, max_length: int, template, task: str) -> list[int]:
    from zhllama.core.templates import Message, encode

    ids = truncate_middle(tokenizer.encode(prompt), max_length)
    if template is None or task in NO_TEMPLATE_TASKS:
        return ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + ids
    text = tokenizer.decode(ids)
    full, _ = encode(tokenizer, template.segments([Message("user", text)], add_generation_prompt=True))
    return full


def run_longbench(
    benchmark,
    model,
    data_dir: Path,
    output: Path,
    tasks: list[str] | None,
    max_length: int,
    template_name: str | None,
    limit: int | None,
    model_id: str = "",
) -> dict:
    from zhllama.core.engine import GenerationParams
    from zhllama.core.generation.respond import Reply
    from zhllama.core.templates import get_template

    configs = benchmark.tasks()
    tasks = tasks or list(configs)
    for task in tasks:
        if task not in configs:
            raise unknown_choice("LongBench task", task, configs)
    if max_length < 2:
        raise UserError(f"--max-length: {max_length} is too small")
    template = get_template(template_name) if template_name else None
    log = PredictionLog(output / "predictions.jsonl")
    per_task: dict[str, list[float]] = defaultdict(list)
    for task in tasks:
        cfg = configs[task]
        samples = benchmark.load(data_dir, task)[:limit]
        key = {"task": task, "model": model_id, "max_length": max_length, "template": template_name}
        for sample in console.track(samples, f"longbench {task}"):
            ids = build_ids(model.tokenizer, cfg["prompt"].format(**sample), max_length, template, task)
            phash = prompt_hash(key, ids)
            if not log.has(task, sample["_id"], phash):
                params = GenerationParams(
                    max_new_tokens=cfg["max_new_tokens"],
                    greedy=True,
                    stop_token_ids=tuple(i for i in (model.tokenizer.eos_id,) if i is not None),
                )
                prediction = Reply(model, ids, params).run()
                score = score_sample(task, prediction, sample["answers"], sample.get("all_classes"))
                log.append(
                    [
                        {
                            "subject": task,
                            "id": sample["_id"],
                            "prompt_hash": phash,
                            "prediction": prediction,
                            "answers": sample["answers"],
                            "score": score,
                            "length": sample.get("length"),
                        }
                    ]
                )
            per_task[task].append(log.records[(task, sample["_id"], phash)]["score"])
    scores = {t: 100.0 * sum(v) / len(v) if v else 0.0 for t, v in per_task.items()}
    by_category: dict[str, list[float]] = defaultdict(list)
    for task, value in scores.items():
        by_category[configs[task]["category"]].append(value)
    categories = {c: sum(v) / len(v) for c, v in by_category.items()}
    summary = {
        "benchmark": "longbench",
        "tasks": {t: {"score": scores[t], "samples": len(per_task[t])} for t in scores},
        "categories": categories,
        "average": sum(categories.values()) / len(categories) if categories else 0.0,
    }
    write_json(output / "summary.json", summary)
    return summary
