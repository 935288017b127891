"""Exact prompt strings, the answer extractor, and every LongBench metric on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from zhllama.core.evaluation import mcq
from zhllama.core.evaluation.longbench import truncate_middle
from zhllama.core.evaluation.longbench_metrics import (
    classification_score,
    code_sim_score,
    normalize_zh,
    qa_f1_zh_score,
    retrieval_zh_score,
    rouge_l_f1,
    rouge_zh_score,
    score_sample,
)
from zhllama.plugins.benchmarks.ceval import CEval
from zhllama.plugins.benchmarks.cmmlu import CMMLU

Q = mcq.Question("computer_network", "0", "HTTP默认端口是____。", ("21", "80", "25", "53"), "B")
SHOT = mcq.Question("computer_network", "1", "IPv4地址长____位。", ("16", "32", "64", "128"), "B")
NAMES = {"computer_network": "计算机网络"}


def test_ceval_zero_shot_prompt_exact():
    header = CEval().header("computer_network", NAMES, "default")
    assert mcq.build_prompt(Q, [], header) == (
        "以下是中国关于计算机网络考试的单项选择题，请选出其中的正确答案。\n\n"
        "HTTP默认端口是____。\nA. 21\nB. 80\nC. 25\nD. 53\n答案："
    )


def test_ceval_five_shot_prompt_exact():
    header = CEval().header("computer_network", NAMES, "default")
    block = "IPv4地址长____位。\nA. 16\nB. 32\nC. 64\nD. 128\n答案：B\n\n"
    assert mcq.build_prompt(Q, [SHOT] * 5, header) == (
        "以下是中国关于计算机网络考试的单项选择题，请选出其中的正确答案。\n\n"
        + block * 5
        + "HTTP默认端口是____。\nA. 21\nB. 80\nC. 25\nD. 53\n答案："
    )


def test_cla2_uses_the_english_key_and_cmmlu_official_header():
    assert CEval().header("computer_network", NAMES, "cla2") == (
        "以下是中国关于computer_network考试的单项选择题，请选出其中的正确答案。\n\n"
    )
    assert CMMLU().header("computer_network", NAMES, "official") == (
        "以下是关于计算机网络的单项选择题，请直接给出正确答案的选项。\n\n"
    )
    assert CMMLU().header("computer_network", NAMES, "default") == CEval().header("computer_network", NAMES, "default")


def test_prompt_with_template_is_wrapped(merged_tokenizer):
    from zhllama.core.evaluation.runner import encode_prompt
    from zhllama.core.templates import Message, get_template
    from zhllama.core.tokenizer import ZhTokenizer

    tok = ZhTokenizer(merged_tokenizer)
    text = mcq.build_prompt(Q, [], CEval().header("computer_network", NAMES, "default"))
    template = get_template("llama2-zh")
    assert template.render_text([Message("user", text)]) == (
        "<s>[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n" + text + " [/INST]"
    )
    assert encode_prompt(tok, text, None) == tok.encode(text, bos=True)
    assert encode_prompt(tok, text, template)[0] == tok.bos_id


def test_cla2_logits_processing():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    out = mcq.cla2_process(logits, prompt_ids=[0, 1, 1])
    assert out.tolist() == pytest.approx([2.0 / 1.1 / 0.2, -1.0 * 1.1 / 0.2, 0.5 / 0.2, 3.0 / 0.2])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("答案是B", "B"),
        ("答案为：C。因为……", "C"),
        ("答案：D", "D"),
        ("我认为选项A正确", "A"),
        ("B是正确的", "B"),
        ("正确答案应该是 C", "C"),
        ("经过分析，最后选 D。", "D"),
        ("首先排除A和C，答案是B", "B"),
        ("端口号是80，对应的是第二个选项", "B"),
        ("我不知道", None),
    ],
)
def test_answer_extractor(text, expected):
    assert mcq.extract_answer(text, Q.options) == expected


def test_rouge_l_and_zh_score():
    assert rouge_l_f1(list("abcde"), list("abxde")) == pytest.approx(0.8)  # LCS 4 of 5 each
    assert rouge_l_f1(["a"], ["b"]) == 0.0
    assert rouge_zh_score("今天天气很好", "今天天气很好") == pytest.approx(1.0)


def test_qa_f1_zh():
    assert normalize_zh("Hello，World！ 你 好") == "helloworld你好"
    assert qa_f1_zh_score("北京", "北京") == 1.0
    # jieba: 北京/是/首都 vs 中国/的/首都 -> overlap 1, P 1/3, R 1/3 -> F1 1/3
    assert qa_f1_zh_score("北京是首都", "中国的首都") == pytest.approx(1 / 3)
    assert qa_f1_zh_score("。", "北京") == 0.0


def test_classification_retrieval_code():
    classes = ["体育", "财经", "科技", "体育新闻"]
    assert classification_score("体育", "体育", all_classes=classes) == 1.0
    assert classification_score("科技和财经", "财经", all_classes=classes) == 0.5
    assert classification_score("体育新闻", "体育新闻", all_classes=classes) == 1.0  # 体育 is a substring of gold
    assert score_sample("lsht", "财经\n科技 体育", ["财经"], classes) == 1.0  # only the first line counts
    assert retrieval_zh_score("段落3", "段落3") == 1.0
    assert retrieval_zh_score("段落3或段落5", "段落3") == 0.5
    assert retrieval_zh_score("不知道", "段落3") == 0.0
    assert code_sim_score("# comment\nx = 1\n", "x = 1") == 1.0
    assert code_sim_score("```\nreturn a\n", "return b") == pytest.approx(0.875)
    assert score_sample("dureader", "北京", ["上海", "北京"], None) == pytest.approx(1.0)  # max over golds


def test_truncate_middle():
    assert truncate_middle(list(range(10)), 4) == [0, 1, 8, 9]
    assert truncate_middle(list(range(10)), 5) == [0, 1, 7, 8, 9]
    assert truncate_middle([1, 2], 5) == [1, 2]
