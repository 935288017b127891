"""`zhllama predict`'s work: answers for a file of prompts, as CLA2's `inference_hf.py --data_file` does.

- Input: `.txt` (one prompt per non-empty line) or `.jsonl` (objects with `prompt`, or `instruction`
  plus optional `input`, optional `system` and `id`).
- The template is applied (`--template auto` by default: the model's own chat template).
- Prompts are decoded in batches of similar length (`--batch-size`), each with its own seeded
  generator (`--seed` + its position in the input), so results do not depend on the batching and
  an interrupted run continues where it stopped: records already in `--output` are skipped.
- The output is JSON lines in input order: `{"index", "id", "prompt", "prediction", "finish_reason",
  "prompt_tokens", "completion_tokens"}`.

`predict_file(model_options, answer, input, output, batch_size, restart)` checks everything before
the model loads (in this order: answer flags, --batch-size, --output, the output guard, the
prompts, the resumable log), answers what is not done yet and returns a `PredictRun`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.generation.options import AnswerOptions
from zhllama.core.loading.options import ModelOptions
from zhllama.core.paths import parse_json_line, read_text_file


def read_prompts(path: Path) -> list[dict]:
    """[{"index", "id", "prompt", "system"}] from a .txt or .jsonl file (checked line by line)."""
    if not path.is_file():
        raise UserError(f"{path}: input file not found")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise UserError(f"{path}: --input must be a .txt or .jsonl file")
    lines = read_text_file(path).splitlines()
    items: list[dict] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if suffix == ".txt":
            items.append({"index": len(items), "id": len(items), "prompt": line, "system": None})
            continue
        record = parse_json_line(line, f"{path}:{number}")
        prompt = record.get("prompt")
        if prompt is None and isinstance(record.get("instruction"), str):
            extra = record.get("input")
            prompt = record["instruction"] + (f"\n{extra}" if isinstance(extra, str) and extra else "")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"{path}:{number}: needs a non-empty 'prompt' (or 'instruction') string")
        system = record.get("system")
        if system is not None and not isinstance(system, str):
            raise UserError(f"{path}:{number}: 'system' must be a string")
        ident = record.get("id", len(items))
        if not isinstance(ident, str | int) or isinstance(ident, bool):
            raise UserError(f"{path}:{number}: 'id' must be a string or an integer")
        items.append({"index": len(items), "id": ident, "prompt": prompt, "system": system})
    if not items:
        raise UserError(f"{path}: no prompts in this file")
    ids = [item["id"] for item in items]
    if len(set(map(str, ids))) != len(ids):
        raise UserError(f"{path}: duplicate 'id' values; every prompt needs its own id")
    return items


def open_log(output: Path, items: list[dict], restart: bool):
    """`output` as a resumable log (`core.appendlog`) of records keyed by input index; a record of
    another input (unknown id, other prompt) or a corrupt line is refused, a torn last line redone."""
    from zhllama.core.appendlog import AppendLog

    by_id = {str(item["id"]): item for item in items}

    def check(record: dict) -> str | None:
        item = by_id.get(str(record["id"]))
        if item is None:
            return f"id {record['id']!r} is not in this input (not a record of this input)"
        if record["prompt"] != item["prompt"]:
            return f"id {record['id']} has another prompt"
        return None

    return AppendLog(
        output,
        key=lambda record: by_id[str(record["id"])]["index"],
        fields=("id", "prompt"),
        what="zhllama predictions file",
        hint="use another --output, or --restart",
        check=check,
        fresh=restart,
    )


def _rewrite(path: Path, done: dict[int, dict]) -> None:
    from zhllama.core.atomic import atomic_file

    with atomic_file(path, force=True) as handle:
        for index in sorted(done):
            handle.write(json.dumps(done[index], ensure_ascii=False) + "\n")


def _batches(todo: list[dict], size: int) -> list[list[dict]]:
    """Length-sorted batches (similar lengths pad little)."""
    ordered = sorted(todo, key=lambda item: (len(item["ids"]), item["index"]))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


@dataclass(frozen=True)
class PredictRun:
    """What a predict run did (`as_dict()` is the `--json` summary)."""

    input: Path
    output: Path
    prompts: int
    skipped: int
    generated: int
    completion_tokens: int
    seconds: float

    def as_dict(self) -> dict:
        tokens, seconds = self.completion_tokens, self.seconds
        return {
            "input": str(self.input),
            "output": str(self.output),
            "prompts": self.prompts,
            "skipped": self.skipped,
            "generated": self.generated,
            "completion_tokens": tokens,
            "seconds": round(seconds, 3),
            "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 and tokens else 0.0,
        }


def _check_request(model_options: ModelOptions, answer: AnswerOptions, input: Path, output: Path, batch_size: int):
    """Every check before anything loads or is written; the validated answer options."""
    from zhllama.core.atomic import check_parent
    from zhllama.core.paths import check_output

    answer = answer.validated()
    if batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {batch_size}")
    if answer.draft_model is not None or answer.guidance_scale is not None:
        raise UserError("--draft-model/--guidance-scale: not supported by predict (use chat)")
    if output.suffix.lower() != ".jsonl":
        raise UserError(f"{output}: --output must be a .jsonl file")
    check_parent(output)
    # the one output guard (paths resolved, symlinks followed, hard links compared), also with --restart
    check_output(output, [input, Path(str(model_options.model)), *model_options.lora])
    return answer


def _answer_all(runtime, answer: AnswerOptions, input: Path, todo: list[dict], batch_size: int, log, done) -> int:
    """Answer `todo` in batches, appending each batch to `log`; the completion tokens generated."""
    from zhllama.core.generation.batch import answer_batch
    from zhllama.core.templates import Message

    for item in todo:
        messages = [Message("system", item["system"])] if item["system"] is not None else []
        item["ids"] = runtime.prompt_ids([*messages, Message("user", item["prompt"])])
        if len(item["ids"]) >= runtime.model.context_length:
            raise UserError(
                f"{input}: prompt {item['id']} is {len(item['ids'])} tokens; "
                f"the context holds {runtime.model.context_length}"
            )
    base = answer.params()
    seed = answer.seed or 0
    tokens = 0
    with console.progress_task("predicting", total=len(todo)) as advance:
        for batch in _batches(todo, batch_size):
            params = [replace(base, seed=seed + item["index"]) for item in batch]
            answers = answer_batch(runtime, [item["ids"] for item in batch], params)
            records = []
            for item, result in zip(batch, answers, strict=True):
                record = {
                    "index": item["index"],
                    "id": item["id"],
                    "prompt": item["prompt"],
                    "prediction": result.text,
                    "finish_reason": result.finish_reason,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": len(result.token_ids),
                }
                done[item["index"]] = record
                records.append(record)
                tokens += len(result.token_ids)
            log.append(records)
            advance(len(batch))
    return tokens


def predict_file(
    model_options: ModelOptions,
    answer: AnswerOptions,
    input: Path,
    output: Path,
    batch_size: int = 8,
    restart: bool = False,
) -> PredictRun:
    """Answer every prompt of `input` not yet in `output` (batched, template applied, resumable)."""
    from zhllama.core.generation.runtime import load_for_answers

    answer = _check_request(model_options, answer, input, output, batch_size)
    items = read_prompts(input)
    log = open_log(output, items, restart)
    done = dict(log.records)
    todo = [item for item in items if item["index"] not in done]
    started = time.perf_counter()
    tokens = 0
    if todo:
        runtime = load_for_answers(model_options, answer)
        try:
            tokens = _answer_all(runtime, answer, input, todo, batch_size, log, done)
        finally:
            runtime.close()
    _rewrite(output, done)  # input order, whatever order the batches finished in (committed by the CLI)
    return PredictRun(
        input, output, len(items), len(items) - len(todo), len(todo), tokens, time.perf_counter() - started
    )
