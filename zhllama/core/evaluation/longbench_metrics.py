"""LongBench (v1) metrics for the Chinese and code tasks, following the official definitions.

ROUGE-L here is the LCS F1 over jieba words; QA F1 is the bag-of-words F1 over jieba words after
lower-casing and removing Chinese/ASCII punctuation and spaces.
"""

from __future__ import annotations

import re
import string
from collections import Counter

CHINESE_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."


def jieba_words(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(60)
    return [w for w in jieba.cut(text, cut_all=False)]


def normalize_zh(text: str) -> str:
    """Lower-case, drop ASCII and Chinese punctuation, drop all whitespace."""
    text = text.lower()
    drop = set(string.punctuation) | set(CHINESE_PUNCTUATION)
    text = "".join(ch for ch in text if ch not in drop)
    return "".join(text.split())


def lcs_length(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f1(prediction: list[str], reference: list[str]) -> float:
    lcs = lcs_length(prediction, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def rouge_zh_score(prediction: str, ground_truth: str, **_) -> float:
    return rouge_l_f1(
        [w for w in jieba_words(prediction) if w.strip()], [w for w in jieba_words(ground_truth) if w.strip()]
    )


def f1_tokens(prediction: list[str], reference: list[str]) -> float:
    common = Counter(prediction) & Counter(reference)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def qa_f1_zh_score(prediction: str, ground_truth: str, **_) -> float:
    pred = [t for t in (normalize_zh(w) for w in jieba_words(prediction)) if t]
    gold = [t for t in (normalize_zh(w) for w in jieba_words(ground_truth)) if t]
    return f1_tokens(pred, gold)


def classification_score(prediction: str, ground_truth: str, all_classes: list[str] | None = None, **_) -> float:
    """1/count of the classes named in the prediction when the gold class is among them."""
    named = [c for c in (all_classes or []) if c in prediction]
    named = [c for c in named if not (c in ground_truth and c != ground_truth)]
    return 1.0 / len(named) if ground_truth in named else 0.0


def retrieval_zh_score(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction that equal the gold paragraph number (段落N)."""
    gold = re.findall(r"段落(\d+)", ground_truth)
    numbers = re.findall(r"\d+", prediction)
    if not gold or not numbers:
        return 0.0
    return sum(n == gold[0] for n in numbers) / len(numbers)


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    """Fuzzy ratio between the first real code line of the prediction and the gold line."""
    from rapidfuzz import fuzz

    line = next((ln for ln in prediction.lstrip("\n").split("\n") if not any(m in ln for m in ("`", "#", "//"))), "")
    return fuzz.ratio(line, ground_truth) / 100.0


METRICS = {
    "dureader": rouge_zh_score,
    "vcsum": rouge_zh_score,
    "multifieldqa_zh": qa_f1_zh_score,
    "lsht": classification_score,
    "passage_retrieval_zh": retrieval_zh_score,
    "lcc": code_sim_score,
    "repobench-p": code_sim_score,
}
FIRST_LINE_TASKS = ("lsht",)  # the official evaluation keeps only the first line for these


def score_sample(task: str, prediction: str, answers: list[str], all_classes: list[str] | None) -> float:
    if task in FIRST_LINE_TASKS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    metric = METRICS[task]
    return max(metric(prediction, gold, all_classes=all_classes) for gold in answers)
