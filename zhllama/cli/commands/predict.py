"""`zhllama predict`: answers for a file of prompts, as CLA2's `inference_hf.py --data_file` does.

- Input: `.txt` (one prompt per non-empty line) or `.jsonl` (objects with `prompt`, or `instruction`
  plus optional `input`, optional `system` and `id`).
- The template is applied (`--template auto` by default: the model's own chat template).
- Prompts are decoded in batches of similar length (`--batch-size`), each with its own seeded
  generator (`--seed` + its position in the input), so results do not depend on the batching and
  an interrupted run continues where it stopped: records already in `--output` are skipped.
- The output is JSON lines in input order: `{"index", "id", "prompt", "prediction", "finish_reason",
  "prompt_tokens", "completion_tokens"}`.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.commands.chat import answer_options_command
from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.options import examples
from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.generation.options import AnswerOptions


def read_prompts(path: Path) -> list[dict]:
    """[{"index", "id", "prompt", "system"}] from a .txt or .jsonl file (checked line by line)."""
    if not path.is_file():
        raise UserError(f"{path}: input file not found")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise UserError(f"{path}: --input must be a .txt or .jsonl file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    items: list[dict] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if suffix == ".txt":
            items.append({"index": len(items), "id": len(items), "prompt": line, "system": None})
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object")
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


@model_options_command
@answer_options_command
def predict(
    model_options: ModelOptions,
    answer: AnswerOptions,
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Prompts: .txt (one per line) or .jsonl (prompt/instruction).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="predictions.jsonl (resumed when it exists).")],
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts decoded together.")] = 8,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over instead of resuming an existing --output.")
    ] = False,
) -> None:
    """Answer every prompt of a file (batched, template applied, resumable) into a JSON-lines file."""
    from zhllama.core.atomic import check_parent
    from zhllama.core.generation.batch import answer_batch
    from zhllama.core.generation.runtime import load_for_answers
    from zhllama.core.paths import check_output
    from zhllama.core.templates import Message

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
    items = read_prompts(input)
    log = open_log(output, items, restart)
    done = dict(log.records)
    todo = [item for item in items if item["index"] not in done]
    started = time.perf_counter()
    tokens = 0
    if todo:
        runtime = load_for_answers(model_options, answer)
        try:
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
        finally:
            runtime.close()
    _rewrite(output, done)  # input order, whatever order the batches finished in (committed by the CLI)
    seconds = time.perf_counter() - started
    summary = {
        "input": str(input),
        "output": str(output),
        "prompts": len(items),
        "skipped": len(items) - len(todo),
        "generated": len(todo),
        "completion_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 and tokens else 0.0,
    }
    console.emit(
        summary,
        f"{len(todo)} prompts answered, {len(items) - len(todo)} already in {output}; "
        f"{tokens} tokens in {seconds:.1f}s -> {output}",
    )


def register(app: typer.Typer) -> None:
    app.command(
        "predict",
        epilog=examples(
            "zhllama predict --model chinese-alpaca-2-7b --input questions.txt --output predictions.jsonl",
            "zhllama predict -m SmolLM2-135M-Instruct -i alpaca.jsonl -o out.jsonl --batch-size 16 --greedy",
            "zhllama --json predict -m model -i prompts.jsonl -o out.jsonl --seed 1 --temperature 0.7",
        ),
    )(predict)
