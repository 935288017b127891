"""LongBench metrics and truncation equal the reference's, on cases computed by hand."""

from __future__ import annotations

import random
from difflib import SequenceMatcher

import pytest

from zhllama.core.evaluation.longbench import build_ids, truncate_middle
from zhllama.core.evaluation.longbench_metrics import (
    classification_score,
    code_sim_score,
    count_score,
    fuzz_ratio,
    length_bucket,
    normalize_answer,
    normalize_zh,
    qa_f1_score,
    qa_f1_zh_score,
    retrieval_score,
    retrieval_zh_score,
    rouge_score,
    rouge_zh_score,
    score_sample,
)


def test_rouge_is_the_summary_level_union_lcs_over_unique_tokens():
    # LCS(a b c d, a x c d y) = 3 over 4 and 5 tokens: P = 0.75, R = 0.6, F = 2PR / (P + R + 1e-8)
    assert rouge_score("a b c d", "a x c d y") == pytest.approx(2 * 0.45 / (1.35 + 1e-8), abs=1e-12)
    # repeated tokens count once: union LCS {a, b} over 2 unique tokens each side -> 1 (LCS-F1 would be 0.8)
    assert rouge_score("a a b", "a b") == pytest.approx(2 * 1 / (2 + 1e-8), abs=1e-12)
    # sentences split on '.': LCS with "a b" and with "c d" unite to all 4 tokens (one-sentence LCS: 2 -> 0.5)
    assert rouge_score("a b . c d", "c d a b") == pytest.approx(2 * 1 / (2 + 1e-8), abs=1e-12)
    assert rouge_score("", "a b") == 0.0  # the package raises on an empty hypothesis: scored 0
    assert rouge_zh_score("今天天气很好", "今天天气很好") == pytest.approx(1.0, abs=1e-7)


def test_rouge_matches_the_rouge_package_directly():
    from rouge import Rouge

    pred, gold = "the cat sat . on the mat", "a cat sat on a mat . it slept"
    assert rouge_score(pred, gold) == Rouge().get_scores([pred], [gold], avg=True)["rouge-l"]["f"]


def test_qa_f1_en_and_zh():
    assert normalize_answer("The  Cat, a dog!") == "cat dog"
    assert qa_f1_score("the cat sat", "a cat sat down") == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))
    assert normalize_zh("Hello，World！ 你 好") == "helloworld你好"
    assert qa_f1_zh_score("北京", "北京") == 1.0
    # jieba: 北京/是/首都 vs 中国/的/首都 -> overlap 1, P 1/3, R 1/3 -> F1 1/3
    assert qa_f1_zh_score("北京是首都", "中国的首都") == pytest.approx(1 / 3)
    assert qa_f1_zh_score("。", "北京") == 0.0


def test_fuzz_ratio_is_fuzzywuzzy_on_difflib():
    assert fuzz_ratio("return a", "return b") == 88  # 2*7/16 = 87.5 -> 88 (half to even)
    assert fuzz_ratio("abcdefgh", "abcdexyz") == 62  # 2*5/16 = 62.5 -> 62 (half to even, not 63)
    assert fuzz_ratio("", "") == 100 and fuzz_ratio("", "x") == 0
    assert code_sim_score("```\nreturn a\n", "return b") == 0.88
    assert code_sim_score("# comment\nx = 1\n", "x = 1") == 1.0
    assert code_sim_score("// c\n#x\n", "y") == 0.0  # no code line: '' vs gold
    from fuzzywuzzy import fuzz

    if fuzz.SequenceMatcher is not SequenceMatcher:
        pytest.skip("python-Levenshtein is installed: fuzzywuzzy no longer computes the reference's values")
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("ab(x) =;") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("ab(x) =;") for _ in range(rng.randint(0, 30)))
        assert fuzz_ratio(a, b) == fuzz.ratio(a, b)


def test_classification_edge_cases_as_the_reference():
    classes = ["体育", "财经", "科技", "体育新闻"]
    assert classification_score("体育", "体育", all_classes=classes) == 1.0
    assert classification_score("科技和财经", "财经", all_classes=classes) == 0.5
    assert classification_score("体育新闻", "体育新闻", all_classes=classes) == 1.0  # 体育 (part of gold) dropped
    assert classification_score("不知道", "体育", all_classes=classes) == 0.0
    # removing 体育 while walking the list skips 育, which stays: 1/2 (a clean filter would give 1.0)
    assert classification_score("体育新闻", "体育新闻", all_classes=["体育", "育", "体育新闻"]) == 0.5
    assert score_sample("lsht", "财经\n科技 体育", ["财经"], classes) == 1.0  # only the first line counts
    assert score_sample("trec", "\nLOC\nHUM", ["LOC"], ["LOC", "HUM"]) == 1.0


def test_retrieval_and_count():
    assert retrieval_zh_score("段落3", "段落3") == 1.0
    assert retrieval_zh_score("段落3或段落5", "段落3") == 0.5
    assert retrieval_zh_score("不知道", "段落3") == 0.0
    assert retrieval_score("Paragraph 12, maybe 2", "Paragraph 12") == 0.5
    assert count_score("there are 7 or 07 paragraphs", 7) == 0.5  # string equality: '07' != '7'
    assert score_sample("dureader", "北京", ["上海", "北京"], None) == pytest.approx(1.0)  # max over golds


def test_length_buckets():
    assert [length_bucket(n) for n in (0, 3999, 4000, 7999, 8000)] == ["0-4k", "0-4k", "4-8k", "4-8k", "8k+"]


class CharTokenizer:
    """One id per character, BOS = 1: truncation can be checked by hand."""

    bos_id = 1

    def encode(self, text, bos=False, special=False):  # a tokenizer without the legacy switch (as llama.cpp's)
        return ([1] if bos else []) + [ord(c) for c in text]

    def decode(self, ids, skip_special=True):
        return "".join(chr(i) for i in ids if not (skip_special and i == 1))


def test_middle_truncation_as_the_reference():
    tok = CharTokenizer()
    # 11 ids with BOS > 6: the first 3 ids (BOS, a, b) and the last 3 (h, i, j), decoded and joined
    assert truncate_middle(tok, "abcdefghij", 6) == "abhij"
    assert build_ids(tok, "abcdefghij", 6, None, "lsht") == [1] + [ord(c) for c in "abhij"]  # exactly 6
    assert truncate_middle(tok, "abcdefghij", 7) == "abhij"  # int(7 / 2) = 3 each side
    assert truncate_middle(tok, "abcde", 6) == "abcde"  # 6 ids with BOS: kept whole
