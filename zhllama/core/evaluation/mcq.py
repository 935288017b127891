"""Multiple-choice exams: questions, prompts, letter scoring, answer extraction (what every exam shares;
the benchmarks' headers and prompt styles live in their plugins, `zhllama/plugins/benchmarks`)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zhllama.core.errors import UserError

if TYPE_CHECKING:
    import torch

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Question:
    subject: str
    qid: str
    question: str
    options: tuple[str, str, str, str]
    answer: str | None  # None for a test split without answers
    explanation: str = ""

    def body(self) -> str:
        choices = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, self.options, strict=True))
        return f"{self.question}{choices}\n答案："


def read_csv_questions(path: Path, subject: str, columns: dict[str, str], require_answer: bool) -> list[Question]:
    """Rows of one exam CSV; `columns` maps our fields (id, question, A-D, answer) to CSV headers."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read CSV ({exc})") from exc
    out = []
    for n, row in enumerate(rows):
        for field in ("question", "A", "B", "C", "D"):
            if row.get(columns[field]) is None:
                raise UserError(f"{path}: row {n + 1}: missing column '{columns[field]}'")
        answer = (row.get(columns["answer"]) or "").strip() or None
        if answer is not None and answer not in LETTERS:
            raise UserError(f"{path}: row {n + 1}: answer '{answer}' is not one of A-D")
        if require_answer and answer is None:
            raise UserError(f"{path}: row {n + 1}: no answer (needed for few-shot examples and scoring)")
        qid = str(row.get(columns["id"]) if row.get(columns["id"]) not in (None, "") else n)
        out.append(
            Question(
                subject,
                qid,
                row[columns["question"]],
                tuple(row[columns[letter]] for letter in LETTERS),
                answer,
                row.get("explanation") or "",
            )
        )
    return out


def build_prompt(question: Question, shots: list[Question], header: str) -> str:
    """Header + few-shot examples with answers + the question ending in '答案：'."""
    examples = "".join(f"{q.body()}{q.answer}\n\n" for q in shots)
    return f"{header}{examples}{question.body()}"


def letter_token_ids(tokenizer) -> list[list[int]]:
    """For each letter, the ids of the pieces '▁X' and 'X' that exist in the vocabulary."""
    ids = []
    for letter in LETTERS:
        found = [i for i in (tokenizer.piece_to_id(f"▁{letter}"), tokenizer.piece_to_id(letter)) if i is not None]
        if not found:
            raise UserError(f"tokenizer has no piece for the answer letter '{letter}'")
        ids.append(sorted(set(found)))
    return ids


def letter_scores(logits: torch.Tensor, letter_ids: list[list[int]]) -> list[float]:
    return [float(logits[ids].sum()) for ids in letter_ids]


# ---- generate mode: read the chosen letter out of free text ---------------------------------
EXTRACTION_RULES = (
    r"答案(?:是|为|应该是|应为|选)?\s*[:：]?\s*([ABCD])",
    r"选(?:择|项)?\s*([ABCD])\s*(?:正确|是正确的|是对的)",
    r"([ABCD])\s*(?:选项)?\s*(?:是)?正确",
    r"(?:^|[^A-Za-z])([ABCD])(?:[^A-Za-z]|$)",
)


def first_option_mentioned(text: str, options: tuple[str, str, str, str]) -> str | None:
    """The letter of the option text that occurs first in `text` (the reference's last resort).

    As the reference's regex alternation does: scanning left to right, at the first position where
    some option text matches, the option listed first (A before D) wins; a text shared by two
    options maps to the later letter.
    """
    named = [(letter, str(option)) for letter, option in zip(LETTERS, options, strict=True) if str(option)]
    if not named:
        return None
    pattern = "|".join(re.escape(option) for _, option in named)
    by_text = {option: letter for letter, option in named}
    found = re.findall(pattern, text, re.M)
    return by_text[found[0]] if found else None


def extract_answer(text: str, options: tuple[str, str, str, str]) -> str | None:
    """The letter an answer names: ordered rules first, then the option text mentioned first."""
    for rule in EXTRACTION_RULES:
        match = re.search(rule, text)
        if match:
            return match.group(1)
    return first_option_mentioned(text, options)
