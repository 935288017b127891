"""Run a multiple-choice benchmark: prompts, length-sorted batches, resume, summary, submission."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.evaluation import mcq
from zhllama.core.evaluation.results import PredictionLog, plot_categories, prompt_hash, summarize, write_json

AUTO_BATCH_TOKENS = 8192


@dataclass
class McqSettings:
    split: str = "val"
    shots: int = 0
    template: str | None = None
    prompt_style: str = "default"
    mode: str = "logits"
    batch_size: str = "auto"
    subjects: str | None = None
    limit: int | None = None
    seed: int = 42
    max_new_tokens: int = 32


def encode_prompt(tokenizer, prompt: str, template) -> list[int]:
    if template is None:
        return tokenizer.encode(prompt, bos=True)
    from zhllama.core.templates import Message, encode

    ids, _ = encode(tokenizer, template.segments([Message("user", prompt)], add_generation_prompt=True))
    return ids


def batches(items: list, lengths: list[int], batch_size: str) -> Iterator[list]:
    """Longest first; fixed-size batches, or `auto`: as many as fit AUTO_BATCH_TOKENS padded tokens."""
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    if batch_size != "auto":
        try:
            size = int(batch_size)
        except ValueError as exc:
            raise UserError(f"--batch-size: '{batch_size}' is not a number or 'auto'") from exc
        if size < 1:
            raise UserError(f"--batch-size: {size} must be at least 1")
        for i in range(0, len(order), size):
            yield [items[j] for j in order[i : i + size]]
        return
    batch: list[int] = []
    for j in order:
        if batch and lengths[batch[0]] * (len(batch) + 1) > AUTO_BATCH_TOKENS:
            yield [items[k] for k in batch]
            batch = []
        batch.append(j)
    if batch:
        yield [items[k] for k in batch]


def run_mcq(
    benchmark, model, data_dir: Path, output: Path, settings: McqSettings, model_id: str = "", plot: bool = False
) -> dict:
    """Score every selected question once (skipping those already in predictions.jsonl)."""
    from zhllama.core.templates import get_template

    if settings.mode not in ("logits", "generate"):
        raise UserError(f"--mode: '{settings.mode}' is not logits or generate")
    questions, dev, names, categories = benchmark.load(data_dir, settings.split)
    if settings.subjects:
        wanted = [s.strip() for s in settings.subjects.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in questions]
        if unknown:
            from zhllama.core.errors import unknown_choice

            raise unknown_choice("subject", unknown[0], questions)
        questions = {s: questions[s] for s in wanted}
    if settings.limit is not None:
        questions = {s: qs[: settings.limit] for s, qs in questions.items()}
    if not 0 <= settings.shots <= 5:
        raise UserError(f"--shots: {settings.shots} must be between 0 and 5")
    template = get_template(settings.template) if settings.template else None
    tokenizer = model.tokenizer
    run_key = {**asdict(settings), "model": model_id, "benchmark": benchmark.name}
    run_key.pop("batch_size")  # batching must not change predictions
    run_key.pop("limit")
    run_key.pop("subjects")
    letter_ids = mcq.letter_token_ids(tokenizer)
    items = []
    for subject, qs in questions.items():
        header = benchmark.header(subject, names, settings.prompt_style)
        shots = dev.get(subject, [])[: settings.shots]
        if len(shots) < settings.shots:
            raise UserError(f"{data_dir}: subject '{subject}' has {len(shots)} dev examples, fewer than --shots")
        for q in qs:
            text = mcq.build_prompt(q, shots, header)
            ids = encode_prompt(tokenizer, text, template)
            items.append((q, ids, prompt_hash(run_key, ids)))
    log = PredictionLog(output / "predictions.jsonl")
    todo = [item for item in items if not log.has(item[0].subject, item[0].qid, item[2])]
    if len(todo) < len(items):
        console.log(f"resuming: {len(items) - len(todo)} of {len(items)} questions already scored")
    with console.progress_task(f"{benchmark.name} {settings.split}", len(todo)) as advance:
        for batch in batches(todo, [len(ids) for _, ids, _ in todo], settings.batch_size):
            if settings.mode == "logits":  # one forward pass for the whole batch
                rows = model.next_token_logits([ids for _, ids, _ in batch])
            else:
                rows = [None] * len(batch)
            log.append(
                [
                    _score(model, q, ids, h, row, letter_ids, settings)
                    for (q, ids, h), row in zip(batch, rows, strict=True)
                ]
            )
            advance(len(batch))
    records = [log.records[(q.subject, q.qid, h)] for q, _, h in items]
    summary = summarize(records, categories)
    summary.update({"benchmark": benchmark.name, "split": settings.split, "settings": asdict(settings)})
    write_json(output / "summary.json", summary)
    if any(r["gold"] is None for r in records):
        submission: dict[str, dict[str, str]] = {}
        for r in records:
            submission.setdefault(r["subject"], {})[str(r["id"])] = r["prediction"]
        write_json(output / "submission.json", submission)
    if plot:
        plot_categories(summary, output / "categories.png", f"{benchmark.name} {settings.split}")
    return summary


def _score(model, q: mcq.Question, ids: list[int], phash: str, logits, letter_ids, settings: McqSettings) -> dict:
    record = {"subject": q.subject, "id": q.qid, "prompt_hash": phash, "gold": q.answer}
    if settings.mode == "logits":
        if settings.prompt_style == "cla2":
            logits = mcq.cla2_process(logits.float(), ids)
        scores = mcq.letter_scores(logits, letter_ids)
        record["scores"] = dict(zip(mcq.LETTERS, scores, strict=True))
        record["prediction"] = mcq.LETTERS[max(range(4), key=lambda i: scores[i])]
    else:
        from zhllama.core.engine import GenerationParams
        from zhllama.core.generation.respond import Reply

        params = GenerationParams(
            max_new_tokens=settings.max_new_tokens,
            greedy=True,
            seed=settings.seed,
            stop_token_ids=tuple(i for i in (model.tokenizer.eos_id,) if i is not None),
        )
        text = Reply(model, ids, params).run()
        record["generated"] = text
        record["prediction"] = mcq.extract_answer(text, q.options)
    record["correct"] = None if q.answer is None else int(record["prediction"] == q.answer)
    return record
