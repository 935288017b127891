"""LongBench (v1) metrics, equal to the reference's (THUDM LongBench `metrics.py`, as CLA2 ships it).

- ROUGE-L is the `rouge` package's (sentence split on '.', summary-level union LCS over unique
  tokens, F of the averaged scores); any error inside it (an empty prediction) scores 0.0.
  Chinese text is cut with jieba and joined with spaces first.
- Code similarity is fuzzywuzzy's integer `fuzz.ratio` / 100 on the first line of the prediction
  that holds no '`', '#' or '//'. The reference environment (its requirements.txt: rouge, jieba,
  fuzzywuzzy, no python-Levenshtein) runs fuzzywuzzy on difflib's SequenceMatcher, so that is what
  `fuzz_ratio` computes whatever else is installed (python-Levenshtein would change the values).
- Classification removes matched classes that are substrings of the gold class while walking the
  same list, so the walk skips the class after each removal; kept as the reference does it.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from difflib import SequenceMatcher

CHINESE_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."


def jieba_words(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(60)
    return list(jieba.cut(text, cut_all=False))


def normalize_answer(text: str) -> str:
    """English: lower-case, drop ASCII punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def normalize_zh(text: str) -> str:
    """Lower-case, drop ASCII and Chinese punctuation, drop all whitespace."""
    drop = set(string.punctuation) | set(CHINESE_PUNCTUATION)
    return "".join("".join(ch for ch in text.lower() if ch not in drop).split())


def f1_tokens(prediction: list[str], reference: list[str]) -> float:
    common = Counter(prediction) & Counter(reference)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **_) -> float:
    return f1_tokens(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh_score(prediction: str, ground_truth: str, **_) -> float:
    pred = [t for t in (normalize_zh(w) for w in jieba_words(prediction)) if t]
    gold = [t for t in (normalize_zh(w) for w in jieba_words(ground_truth)) if t]
    return f1_tokens(pred, gold)


def rouge_score(prediction: str, ground_truth: str, **_) -> float:
    from rouge import Rouge

    try:
        return Rouge().get_scores([prediction], [ground_truth], avg=True)["rouge-l"]["f"]
    except Exception:  # the reference scores 0.0 whenever the package raises (empty text, ...)
        return 0.0


def rouge_zh_score(prediction: str, ground_truth: str, **_) -> float:
    return rouge_score(" ".join(jieba_words(prediction)), " ".join(jieba_words(ground_truth)))


def classification_score(prediction: str, ground_truth: str, all_classes: list[str] | None = None, **_) -> float:
    """1/len(matches) when the gold class is among the classes named in the prediction."""
    matches = [c for c in (all_classes or []) if c in prediction]
    i = 0
    while i < len(matches):  # removing while walking skips the next class, as the reference's for-loop
        term = matches[i]
        if term in ground_truth and term != ground_truth:
            matches.remove(term)
        i += 1
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def _count_matches(prediction: str, wanted: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == wanted for n in numbers) / len(numbers) if numbers else 0.0


def count_score(prediction: str, ground_truth: str, **_) -> float:
    return _count_matches(prediction, str(ground_truth))


def retrieval_score(prediction: str, ground_truth: str, **_) -> float:
    return _count_matches(prediction, re.findall(r"Paragraph (\d+)", ground_truth)[0])


def retrieval_zh_score(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction that equal the gold paragraph number (段落N)."""
    return _count_matches(prediction, re.findall(r"段落(\d+)", ground_truth)[0])


def fuzz_ratio(a: str, b: str) -> int:
    """fuzzywuzzy 0.18 `fuzz.ratio` on difflib (no python-Levenshtein): round(100 * ratio), half to even."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * SequenceMatcher(None, a, b).ratio()))


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    """fuzz.ratio / 100 between the first real code line of the prediction and the gold line."""
    line = next((ln for ln in prediction.lstrip("\n").split("\n") if not any(m in ln for m in ("`", "#", "//"))), "")
    return fuzz_ratio(line, ground_truth) / 100


METRICS = {
    "narrativeqa": qa_f1_score,
    "qasper": qa_f1_score,
    "multifieldqa_en": qa_f1_score,
    "multifieldqa_zh": qa_f1_zh_score,
    "hotpotqa": qa_f1_score,
    "2wikimqa": qa_f1_score,
    "musique": qa_f1_score,
    "dureader": rouge_zh_score,
    "gov_report": rouge_score,
    "qmsum": rouge_score,
    "multi_news": rouge_score,
    "vcsum": rouge_zh_score,
    "trec": classification_score,
    "triviaqa": qa_f1_score,
    "samsum": rouge_score,
    "lsht": classification_score,
    "passage_retrieval_en": retrieval_score,
    "passage_count": count_score,
    "passage_retrieval_zh": retrieval_zh_score,
    "lcc": code_sim_score,
    "repobench-p": code_sim_score,
}
FIRST_LINE_TASKS = ("trec", "triviaqa", "samsum", "lsht")  # the reference scores only the first line


def score_sample(task: str, prediction: str, answers: list[str], all_classes: list[str] | None) -> float:
    if task in FIRST_LINE_TASKS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    metric = METRICS[task]
    return max([0.0] + [metric(prediction, gold, all_classes=all_classes) for gold in answers])


BUCKETS = ("0-4k", "4-8k", "8k+")


def length_bucket(length: int) -> str:
    """LongBench-E's length bucket of a sample (by its `length` field)."""
    return BUCKETS[0] if length < 4000 else BUCKETS[1] if length < 8000 else BUCKETS[2]
