"""Prompt styles of the exam plugins: one object per `--prompt-style`, which owns everything the
style decides: its defaults (shots, mode, answer length), the token ids of a question, the
processing of the letter logits, the generation settings and the answer extraction.

`default`: the C-Eval header, few-shot examples, letter logits as they are, greedy generation and
zhllama's extraction rules. `official` (CMMLU): the CMMLU authors' header. `cla2`: the
Chinese-LLaMA-Alpaca-2 evaluators (`scripts/ceval`, `scripts/cmmlu`), item for item.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from zhllama.core.errors import UserError
from zhllama.core.evaluation import mcq
from zhllama.core.evaluation.mcq import LETTERS, Question, build_prompt, first_option_mentioned

if TYPE_CHECKING:
    import torch

CEVAL_HEADER = "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
CMMLU_OFFICIAL_HEADER = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
DEFAULT_MAX_NEW_TOKENS = 32


class PromptStyle:
    """`--prompt-style default`: a subject header, few-shot examples, the question ending in '答案：'."""

    name = "default"
    header = CEVAL_HEADER
    shots = 0  # the default --shots
    mode = "logits"  # the default --mode
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS  # the default generate-mode answer length

    def check(self, settings) -> None:
        """Refuse settings this style cannot reproduce (raise `UserError`)."""

    def subject_header(self, subject: str, names: dict[str, str]) -> str:
        return self.header.format(subject=names[subject])

    def ids(self, tokenizer, settings, template, question: Question, shots: list[Question], names) -> list[int]:
        """The token ids the model sees for one question (BOS included)."""
        text = build_prompt(question, shots, self.subject_header(question.subject, names))
        if template is None:
            return tokenizer.encode(text, bos=True)
        from zhllama.core.templates import Message, encode

        messages = [Message("user", text)]
        ids, _ = encode(
            tokenizer, template.segments(messages, system=settings.system_prompt, add_generation_prompt=True)
        )
        return ids

    def process_logits(self, logits: torch.Tensor, prompt_ids: list[int]) -> torch.Tensor:
        return logits

    def generation(self, settings, stop_token_ids: tuple[int, ...]):
        from zhllama.core.engine import GenerationParams

        return GenerationParams(
            max_new_tokens=settings.max_new_tokens, greedy=True, seed=settings.seed, stop_token_ids=stop_token_ids
        )

    def extract(self, text: str, options: tuple[str, str, str, str]) -> str | None:
        return mcq.extract_answer(text, options)


class OfficialStyle(PromptStyle):
    """`--prompt-style official` (CMMLU): the CMMLU authors' header."""

    name = "official"
    header = CMMLU_OFFICIAL_HEADER


# ---- the Chinese-LLaMA-Alpaca-2 evaluators (scripts/ceval, scripts/cmmlu), item for item -------
CLA2_TEMPLATE = "llama2-zh"  # the only template the reference evaluators build
CLA2_INST = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{instruction} [/INST]"


def cla2_prompt(question: Question, shots: list[Question], subject: str, system: str | None) -> str:
    """The exact text the CLA2 evaluator tokenizes (it adds BOS) for one question.

    `subject` is the subject's file key (the reference puts the English key in its header);
    `system` is None without a template (`--with_prompt False`), else the system prompt.
    0-shot has no header. With a template only the question is wrapped; 5-shot with a template is
    a multi-turn history: the header as the first turn, answered by an acknowledgement, then one
    `[INST] question [/INST]answer` turn per shot, then the wrapped question.
    """
    body = question.body()
    if system is not None:
        body = CLA2_INST.format(system=system, instruction=body)
    if not shots:
        return body
    header = CEVAL_HEADER.format(subject=subject)
    if system is None:
        return build_prompt(question, shots, header)
    history = CLA2_INST.format(system=system, instruction=header) + f"好的，我会结合{subject}相关知识回答"
    history += "".join(f"[INST] {q.body()}[/INST]{q.answer}\n" for q in shots)
    return history + body


def cla2_process(logits: torch.Tensor, prompt_ids: list[int], penalty: float = 1.1, temperature: float = 0.2):
    """The reference evaluator's logits processing: repetition penalty over the prompt, then temperature."""
    import torch

    out = logits.clone()
    seen = torch.tensor(sorted(set(prompt_ids)), dtype=torch.long, device=out.device)
    values = out[seen]
    out[seen] = torch.where(values > 0, values / penalty, values * penalty)
    return out / temperature


CLA2_PATTERNS = (
    r"([ABCD])是正确的",
    r"选项([ABCD])正确",
    r"答案为([ABCD])",
    r"答案是([ABCD])",
    r"答案([ABCD])",
    r"选择([ABCD])",
    r"答案：([ABCD])",
    r"选择答案([ABCD])",
)


def extract_answer_cla2(text: str, options: tuple[str, str, str, str]) -> str | None:
    """The CLA2 evaluator's extraction, step for step; None where it would guess at random.

    1. the last '所以答案是X。' when X is a letter; 2. the first of its patterns that matches;
    3. the first letter A-D anywhere; 4. the option text mentioned first.
    """
    concluded = re.findall(r"所以答案是(.+?)。", text, re.M)
    if concluded and concluded[-1] in LETTERS:
        return concluded[-1]
    for pattern in CLA2_PATTERNS:
        match = re.search(pattern, text, re.M)
        if match:
            return match.group(1)
    letters = re.findall(r"[ABCD]", text, re.M)
    if letters:
        return letters[0]
    return first_option_mentioned(text, options)


class Cla2Style(PromptStyle):
    """`--prompt-style cla2`: the reference evaluator's prompt (`cla2_prompt`, tokenized as its
    LlamaTokenizer(legacy=True) reads it), its logits processing, sampling and extraction, and its
    defaults: 5-shot (`--few_shot True --ntrain 5`), 20 new tokens, and `mode` (C-Eval: logits,
    its constrained decoding; CMMLU: generate)."""

    name = "cla2"
    shots = 5
    max_new_tokens = 20  # the reference's generation_config

    def __init__(self, system: str, mode: str):
        self.system = system  # the evaluator's system prompt inside --template llama2-zh
        self.mode = mode

    def check(self, settings) -> None:
        if settings.template not in (None, CLA2_TEMPLATE):
            raise UserError(
                f"--template: --prompt-style cla2 reproduces the reference's {CLA2_TEMPLATE} prompt only "
                f"(got '{settings.template}')"
            )

    def ids(self, tokenizer, settings, template, question: Question, shots: list[Question], names) -> list[int]:
        from zhllama.core.tokenizer import reference_encode

        system = None
        if template is not None:
            system = settings.system_prompt if settings.system_prompt is not None else self.system
        # the reference tokenizes the whole text at once (LlamaTokenizer, legacy=True), BOS first
        return reference_encode(tokenizer, cla2_prompt(question, shots, question.subject, system), bos=True)

    def process_logits(self, logits, prompt_ids):
        return cla2_process(logits.float(), prompt_ids)

    def generation(self, settings, stop_token_ids):
        from zhllama.core.engine import GenerationParams

        # the reference samples: temperature 0.2, top-k 40, top-p 0.9, repetition penalty 1.1
        return GenerationParams(
            max_new_tokens=settings.max_new_tokens,
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            repetition_penalty=1.1,
            seed=settings.seed,
            stop_token_ids=stop_token_ids,
        )

    def extract(self, text, options):
        return extract_answer_cla2(text, options)
