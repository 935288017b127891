"""Run a multiple-choice benchmark: prompts, prefix-sharing batches, resume, summary, submission."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import UserError, unknown_choice
from zhllama.core.evaluation import mcq
from zhllama.core.evaluation.results import (
    PredictionLog,
    check_output_folder,
    plot_categories,
    prompt_hash,
    summarize,
    write_json,
)
from zhllama.core.schema import option

AUTO_BATCH_TOKENS = 8192  # auto batches: padded new tokens per forward pass
AUTO_KV_TOKENS = 32768  # auto batches with a shared prefix: (prefix + suffix) tokens held in the KV cache
MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate prefix pass
MODES = ("logits", "generate")


@dataclass
class McqSettings:
    """The settings of one multiple-choice run (CLI flags are generated from these fields)."""

    split: str | None = option(None, "val / test / dev (default: val for ceval, test for cmmlu).")
    shots: int | None = option(
        None, "Few-shot examples from dev (0-5), in file order (default 0; cla2: 5, as the reference)."
    )
    template: str | None = option(None, "Wrap prompts in an sft template (cla2: llama2-zh, as the reference).")
    system_prompt: str | None = option(
        None, "System prompt inside --template (default: the template's; cla2: the reference evaluator's)."
    )
    prompt_style: str = option(
        "default", "default, cla2 (the Chinese-LLaMA-Alpaca-2 evaluator, item for item) or official (cmmlu)."
    )
    mode: str | None = option(
        None,
        "logits (one forward pass per question) or generate (free text, letter extracted); default logits, "
        "cla2: the reference script's (ceval: logits = its constrained decoding; cmmlu: generate).",
    )
    batch_size: str = option("auto", "Questions per forward pass, or auto.")
    subjects: str | None = option(None, "Comma-separated subject keys (default: all).")
    limit: int | None = option(None, "At most N questions per subject (N >= 1).")
    seed: int = option(42, "Seed for generate-mode sampling (cla2 samples as the reference; default is greedy).")
    max_new_tokens: int | None = option(None, "generate mode: answer length (default 32; cla2: 20 as the reference).")
    prefix_reuse: bool = option(
        True,
        "logits mode: run each subject's shared few-shot prefix once and reuse its KV cache.",
        "--prefix-reuse/--no-prefix-reuse",
    )
    plot: bool = option(False, "Also write a bar chart per category.", "--plot")

    def checked(self, benchmark) -> CheckedMcqSettings:
        """A checked copy with the benchmark's defaults filled in (checking it again returns it as
        is); raises `UserError` naming the first bad option."""
        from zhllama.core.templates import template_names

        if isinstance(self, CheckedMcqSettings):
            return self
        split = self.split or benchmark.splits[0]
        if split not in benchmark.splits:
            raise UserError(f"--split: '{split}' is not one of {', '.join(benchmark.splits)} for {benchmark.name}")
        if self.prompt_style not in benchmark.prompt_styles:
            raise unknown_choice(f"--prompt-style for {benchmark.name}", self.prompt_style, benchmark.prompt_styles)
        style = benchmark.prompt_styles[self.prompt_style]
        mode = self.mode if self.mode is not None else style.mode
        shots = self.shots if self.shots is not None else style.shots
        if mode not in MODES:
            raise unknown_choice("--mode", mode, MODES)
        if not 0 <= shots <= 5:
            raise UserError(f"--shots: {shots} must be between 0 and 5")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit: {self.limit} must be at least 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens: {self.max_new_tokens} must be at least 1")
        batch_size_of(self.batch_size)
        if self.template is not None and self.template not in template_names():
            raise unknown_choice("--template", self.template, template_names())
        style.check(self)
        if self.system_prompt is not None and self.template is None:
            raise UserError("--system-prompt: needs --template (prompts without a template have no system prompt)")
        max_new = self.max_new_tokens or style.max_new_tokens
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return CheckedMcqSettings(**{**values, "split": split, "shots": shots, "mode": mode, "max_new_tokens": max_new})


@dataclass
class CheckedMcqSettings(McqSettings):
    """`McqSettings` after `checked()`: every default resolved, every option valid."""


def batch_size_of(spec: str) -> int | None:
    """None for `auto`, else the positive batch size."""
    if spec == "auto":
        return None
    try:
        size = int(spec)
    except ValueError as exc:
        raise UserError(f"--batch-size: '{spec}' is not a number or 'auto'") from exc
    if size < 1:
        raise UserError(f"--batch-size: {size} must be at least 1")
    return size


def question_ids(benchmark, tokenizer, settings: McqSettings, template, q, shots, names) -> list[int]:
    """The token ids the model sees for one question (BOS included), as its prompt style builds them."""
    return benchmark.prompt_styles[settings.prompt_style].ids(tokenizer, settings, template, q, shots, names)


def batches(items: list, lengths: list[int], batch_size: str, prefix: int = 0) -> Iterator[list]:
    """Longest first; fixed-size batches, or `auto`: as many as fit the padded-token budgets.

    `prefix` is the length of a shared prefix held once per row in the KV cache.
    """
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    size = batch_size_of(batch_size)
    if size is not None:
        for i in range(0, len(order), size):
            yield [items[j] for j in order[i : i + size]]
        return
    batch: list[int] = []
    for j in order:
        rows = len(batch) + 1
        if batch and (
            lengths[batch[0]] * rows > AUTO_BATCH_TOKENS or (prefix + lengths[batch[0]]) * rows > AUTO_KV_TOKENS
        ):
            yield [items[k] for k in batch]
            batch = []
        batch.append(j)
    if batch:
        yield [items[k] for k in batch]


def common_prefix(sequences: list[list[int]]) -> list[int]:
    """The longest token prefix all sequences share, leaving at least one token in each."""
    first = sequences[0]
    n = min(len(s) for s in sequences) - 1
    for seq in sequences[1:]:
        n = next((i for i in range(n) if seq[i] != first[i]), n)
    return list(first[: max(n, 0)])


def logits_plan(todo: list, settings: McqSettings) -> Iterator[tuple[list[int], list]]:
    """(shared prefix, batch) pairs: each subject's questions share their common token prefix
    (header + shots); subjects with a short one are batched together without a prefix."""
    by_subject: dict[str, list] = {}
    for item in todo:
        by_subject.setdefault(item[0].subject, []).append(item)
    pooled = []
    for items in by_subject.values():
        prefix = common_prefix([ids for _, ids, _ in items]) if settings.prefix_reuse else []
        if len(prefix) < MIN_SHARED_PREFIX:
            pooled.extend(items)
            continue
        lengths = [len(ids) - len(prefix) for _, ids, _ in items]
        for batch in batches(items, lengths, settings.batch_size, prefix=len(prefix)):
            yield prefix, batch
    for batch in batches(pooled, [len(ids) for _, ids, _ in pooled], settings.batch_size):
        yield [], batch


def load_exam(benchmark, data_dir: Path, settings: McqSettings):
    """(questions, dev, names, categories) of the selected subjects, every file checked."""
    settings = settings.checked(benchmark)
    questions, dev, names, categories = benchmark.load(data_dir, settings.split)
    if settings.subjects:
        wanted = [s.strip() for s in settings.subjects.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in questions]
        if unknown:
            raise unknown_choice("subject", unknown[0], questions)
        questions = {s: questions[s] for s in wanted}
    if settings.limit is not None:
        questions = {s: qs[: settings.limit] for s, qs in questions.items()}
    for subject in questions:
        have = len(dev.get(subject, []))
        if have < settings.shots:
            raise UserError(f"{data_dir}: subject '{subject}' has {have} dev examples, fewer than --shots")
    return questions, dev, names, categories


def run_mcq(
    benchmark,
    model,
    data_dir: Path,
    output: Path,
    settings: McqSettings,
    model_id: str = "",
    plot: bool = False,
    exam=None,
) -> dict:
    """Score every selected question once (skipping those already in predictions.jsonl)."""
    from zhllama.core.templates import get_template

    settings = settings.checked(benchmark)
    check_output_folder(output, inputs=[Path(data_dir)])
    questions, dev, names, categories = exam if exam is not None else load_exam(benchmark, data_dir, settings)
    template = get_template(settings.template) if settings.template else None
    style = benchmark.prompt_styles[settings.prompt_style]
    tokenizer = model.tokenizer
    run_key = {**asdict(settings), "model": model_id, "benchmark": benchmark.name}
    for key in ("batch_size", "limit", "subjects", "prefix_reuse", "plot"):  # these must not change predictions
        run_key.pop(key)
    if settings.mode == "logits":  # generation settings play no part in one forward pass
        run_key.pop("seed")
        run_key.pop("max_new_tokens")
    letter_ids = mcq.letter_token_ids(tokenizer)
    items = []
    for subject, qs in questions.items():
        shots = dev.get(subject, [])[: settings.shots]
        for q in qs:
            ids = question_ids(benchmark, tokenizer, settings, template, q, shots, names)
            items.append((q, ids, prompt_hash(run_key, ids)))
    log = PredictionLog(output / "predictions.jsonl")
    todo = [item for item in items if not log.has(item[0].subject, item[0].qid, item[2])]
    if len(todo) < len(items):
        console.log(f"resuming: {len(items) - len(todo)} of {len(items)} questions already scored")
    with console.progress_task(f"{benchmark.name} {settings.split}", len(todo)) as advance:
        if settings.mode == "logits":
            for prefix, batch in logits_plan(todo, settings):
                if prefix:
                    rows = model.next_token_logits_with_prefix(prefix, [ids[len(prefix) :] for _, ids, _ in batch])
                else:
                    rows = model.next_token_logits([ids for _, ids, _ in batch])
                log.append(
                    [
                        _score_logits(q, ids, h, row, letter_ids, style)
                        for (q, ids, h), row in zip(batch, rows, strict=True)
                    ]
                )
                advance(len(batch))
        else:
            for q, ids, h in todo:
                log.append([_generate(model, q, ids, h, settings, style)])
                advance()
    records = [log.records[(q.subject, q.qid, h)] for q, _, h in items]
    summary = summarize(records, categories)
    summary.update({"benchmark": benchmark.name, "split": settings.split, "settings": asdict(settings)})
    write_json(output / "summary.json", summary)
    if any(r["gold"] is None for r in records):
        submission: dict[str, dict[str, str]] = {}
        for r in records:
            submission.setdefault(r["subject"], {})[str(r["id"])] = r["prediction"]
        write_json(output / "submission.json", submission)
    if plot or settings.plot:
        plot_categories(summary, output / "categories.png", f"{benchmark.name} {settings.split}")
    return summary


def _record(q: mcq.Question, phash: str, prediction: str | None, **fields) -> dict:
    correct = None if q.answer is None else int(prediction == q.answer)
    return {
        "subject": q.subject,
        "id": q.qid,
        "prompt_hash": phash,
        "gold": q.answer,
        **fields,
        "prediction": prediction,
        "correct": correct,
    }


def _score_logits(q: mcq.Question, ids: list[int], phash: str, logits, letter_ids, style) -> dict:
    logits = style.process_logits(logits, ids)
    scores = mcq.letter_scores(logits, letter_ids)
    best = mcq.LETTERS[max(range(4), key=lambda i: scores[i])]
    return _record(q, phash, best, scores=dict(zip(mcq.LETTERS, scores, strict=True)))


def _generate(model, q: mcq.Question, ids: list[int], phash: str, settings: McqSettings, style) -> dict:
    from zhllama.core.generation.respond import Reply

    stops = tuple(i for i in (model.tokenizer.eos_id,) if i is not None)
    text = Reply(model, ids, style.generation(settings, stops)).run()
    return _record(q, phash, style.extract(text, q.options), generated=text)
