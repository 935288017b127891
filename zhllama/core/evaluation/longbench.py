"""Run LongBench tasks as CLA2's `scripts/longbench/pred_llama2.py` + `eval.py` do, with greedy decoding.

Text is tokenized and decoded as the reference's tokenizer does (`LlamaTokenizer`, legacy=True of
transformers 4.x, through `ZhTokenizer.encode/decode(..., legacy=True)`): special-token strings inside the data
(`</s>` quoted in code) are read as those tokens, and each decoded piece sequence loses one leading
'▁' before sentencepiece joins it.
Prompts longer than `max_length` tokens lose their middle exactly as the reference does it: the
prompt is encoded with BOS, the first `max_length // 2` ids (BOS among them) and the last
`max_length // 2` ids are decoded to text (each half on its own, so a second half that starts with
a whitespace piece keeps one space fewer) and joined, and that text is encoded again (with the
template when one is used). Predictions are the generated ids decoded the same way (an answer that
starts with indentation keeps one space fewer). samsum stops at the first newline, as the reference.
LongBench-E (`e=True`) reads `{task}_e.jsonl` and reports each task's score per length bucket
(0-4k, 4-8k, 8k+) besides the overall score.
Deliberate differences: decoding is greedy (the reference samples at temperature 0.2), so reruns
agree; `--template` applies the reference's `--with_inst auto` rule (no `--with_inst true`), and
samsum may stop at once on a newline (the reference forbids stopping before one new token).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields, replace
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import UserError, unknown_choice
from zhllama.core.evaluation.longbench_metrics import BUCKETS, length_bucket, score_sample
from zhllama.core.evaluation.results import PredictionLog, check_output_folder, prompt_hash, write_json
from zhllama.core.schema import option
from zhllama.core.tokenizer import reference_decode, reference_encode

NO_TEMPLATE_TASKS = ("trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p")  # the reference's with_inst=auto
REFERENCE_MAX_LENGTH = 4096 - 512  # pred_llama2.py's default for a 4K model


@dataclass
class LongBenchSettings:
    """The settings of one LongBench run (CLI flags are generated from these fields)."""

    tasks: str | None = option(None, "Comma-separated tasks (default: all with a config).")
    max_length: int | None = option(
        None, "Prompt tokens; longer prompts lose their middle (default: the model's context - 512, 3584 at 4K)."
    )
    template: str | None = option(
        None, "Wrap prompts in an sft template (not for trec/triviaqa/samsum/lsht/lcc/repobench-p)."
    )
    system_prompt: str | None = option(None, "System prompt inside --template (default: the template's).")
    limit: int | None = option(None, "At most N samples per task (N >= 1).")
    e: bool = option(False, "LongBench-E: {task}_e.jsonl files, scores per length bucket (0-4k, 4-8k, 8k+).", "--e")

    def checked(self, configs: dict, context_length: int | None = None) -> CheckedLongBenchSettings:
        """A checked copy (checking it again returns it as is); with `context_length` also the
        `--max-length` it implies. Raises `UserError` naming the first bad option."""
        from zhllama.core.templates import template_names

        if isinstance(self, CheckedLongBenchSettings):
            return self.for_context(context_length) if context_length else self
        tasks = [t.strip() for t in self.tasks.split(",") if t.strip()] if self.tasks else list(configs)
        for task in tasks:
            if task not in configs:
                raise unknown_choice("--tasks: LongBench task", task, configs)
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit: {self.limit} must be at least 1")
        if self.template is not None and self.template not in template_names():
            raise unknown_choice("--template", self.template, template_names())
        if self.system_prompt is not None and self.template is None:
            raise UserError("--system-prompt: needs --template")
        if self.max_length is not None and self.max_length < 2:
            raise UserError(f"--max-length: {self.max_length} is too small")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        out = CheckedLongBenchSettings(**{**values, "tasks": ",".join(tasks)})
        return out.for_context(context_length) if context_length else out


@dataclass
class CheckedLongBenchSettings(LongBenchSettings):
    """`LongBenchSettings` after `checked()`: tasks resolved, every option valid."""

    def for_context(self, context_length: int | None) -> CheckedLongBenchSettings:
        """`--max-length` for a model of `context_length` positions: the given one if it fits,
        else the model's context − 512 (the reference's 3584 when the context is unknown)."""
        max_length = self.max_length
        if context_length:
            if max_length is None:
                max_length = max(context_length - 512, context_length // 2)
            elif max_length > context_length:
                raise UserError(
                    f"--max-length: {max_length} is longer than the model's context ({context_length} tokens); "
                    "extend it with --rope-scaling/--rope-factor (or --context-length)"
                )
        return replace(self, max_length=max_length or REFERENCE_MAX_LENGTH)


CLA2_TEMPLATE = "llama2-zh"  # pred_llama2.py's fill_llama2_prompt_template
CLA2_INST = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{instruction} [/INST]"
DECODING = "legacy-v1"  # part of each prediction's key: bump when prompt ids or decoding change


def truncate_middle(tokenizer, prompt: str, max_length: int) -> str:
    """The prompt text, its middle cut as the reference does when it exceeds `max_length` tokens."""
    ids = reference_encode(tokenizer, prompt, bos=True)
    if len(ids) <= max_length:
        return prompt
    half = max_length // 2
    return reference_decode(tokenizer, ids[:half]) + reference_decode(tokenizer, ids[-half:])


def build_ids(tokenizer, prompt: str, max_length: int, template, task: str, system: str | None = None) -> list[int]:
    """BOS + the (middle-truncated) prompt, wrapped in `template` unless the task is one the
    reference leaves bare; the reference's own template text is tokenized whole, as it does."""
    from zhllama.core.templates import Message, encode

    text = truncate_middle(tokenizer, prompt, max_length)
    if template is None or task in NO_TEMPLATE_TASKS:
        return reference_encode(tokenizer, text, bos=True)
    if template.name == CLA2_TEMPLATE:
        system = system if system is not None else template.default_system
        return reference_encode(tokenizer, CLA2_INST.format(system=system, instruction=text), bos=True)
    full, _ = encode(tokenizer, template.segments([Message("user", text)], system=system, add_generation_prompt=True))
    return full


def stop_ids(tokenizer, task: str) -> tuple[int, ...]:
    r"""EOS; for samsum also the id that ends `encode("\n")`, as the reference stops there."""
    ids = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    if task == "samsum":
        newline = reference_encode(tokenizer, "\n")
        if newline:
            ids.append(newline[-1])
    return tuple(ids)


def load_samples(benchmark, data_dir: Path, settings: LongBenchSettings) -> dict[str, list[dict]]:
    """task -> samples (every file parsed before the model is loaded)."""
    out = {}
    for task in settings.tasks.split(","):
        samples = benchmark.load(data_dir, task, e=settings.e)
        if settings.e and any(not isinstance(s.get("length"), int) for s in samples):
            raise UserError(f"{benchmark.path(data_dir, task, True)}: LongBench-E samples need an integer 'length'")
        out[task] = samples[: settings.limit]
    return out


def run_longbench(
    benchmark, model, data_dir: Path, output: Path, settings: LongBenchSettings, model_id: str = "", samples=None
) -> dict:
    from zhllama.core.engine import GenerationParams
    from zhllama.core.generation.respond import Reply
    from zhllama.core.templates import get_template

    configs = benchmark.tasks(data_dir)
    settings = settings.checked(configs).for_context(model.context_length)
    check_output_folder(output, inputs=[Path(data_dir)])
    samples = samples if samples is not None else load_samples(benchmark, data_dir, settings)
    template = get_template(settings.template) if settings.template else None
    log = PredictionLog(output / "predictions.jsonl")
    per_task: dict[str, list[tuple[float, int | None]]] = defaultdict(list)
    for task, rows in samples.items():
        cfg = configs[task]
        key = {
            "task": task,
            "model": model_id,
            "max_length": settings.max_length,
            "template": settings.template,
            "system": settings.system_prompt,
            "decoding": DECODING,
        }
        for sample in console.track(rows, f"longbench {task}"):
            try:
                prompt = cfg["prompt"].format(**sample)
            except (KeyError, IndexError) as exc:
                raise UserError(f"{task}: sample {sample['_id']}: the prompt needs field {exc}") from exc
            ids = build_ids(model.tokenizer, prompt, settings.max_length, template, task, settings.system_prompt)
            phash = prompt_hash(key, ids)
            if not log.has(task, sample["_id"], phash):
                params = GenerationParams(
                    max_new_tokens=cfg["max_new_tokens"], greedy=True, stop_token_ids=stop_ids(model.tokenizer, task)
                )
                reply = Reply(model, ids, params)
                reply.run()
                # the reference: tokenizer.decode(output[context_length:], skip_special_tokens=True)
                prediction = reference_decode(model.tokenizer, reply.token_ids)
                score = score_sample(task, prediction, sample["answers"], sample.get("all_classes"))
                record = {
                    "subject": task,
                    "id": sample["_id"],
                    "prompt_hash": phash,
                    "prediction": prediction,
                    "answers": sample["answers"],
                    "score": score,
                    "length": sample.get("length"),
                }
                log.append([record])
            done = log.records[(task, sample["_id"], phash)]
            per_task[task].append((done["score"], sample.get("length")))
    return summarize_longbench(per_task, configs, settings, output)


def summarize_longbench(per_task: dict, configs: dict, settings: LongBenchSettings, output: Path) -> dict:
    """Scores in percent as the reference's eval.py (per task; per length bucket with --e)."""
    tasks = {}
    for task, rows in per_task.items():
        entry = {"score": 100.0 * sum(s for s, _ in rows) / len(rows) if rows else 0.0, "samples": len(rows)}
        if settings.e:
            buckets: dict[str, list[float]] = {b: [] for b in BUCKETS}
            for score, length in rows:
                buckets[length_bucket(length)].append(score)
            entry["buckets"] = {b: (100.0 * sum(v) / len(v) if v else None) for b, v in buckets.items()}
        tasks[task] = entry
    by_category: dict[str, list[float]] = defaultdict(list)
    for task, entry in tasks.items():
        by_category[configs[task]["category"]].append(entry["score"])
    categories = {c: sum(v) / len(v) for c, v in by_category.items()}
    summary = {
        "benchmark": "longbench-e" if settings.e else "longbench",
        "tasks": tasks,
        "categories": categories,
        "average": sum(categories.values()) / len(categories) if categories else 0.0,
        "settings": {"max_length": settings.max_length, "template": settings.template, "e": settings.e},
    }
    if settings.e:
        summary["buckets"] = {}
        for b in BUCKETS:
            values = [e["buckets"][b] for e in tasks.values() if e["buckets"][b] is not None]
            summary["buckets"][b] = sum(values) / len(values) if values else None
    write_json(output / "summary.json", summary)
    return summary
