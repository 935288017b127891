"""Exact prompt strings (default style), the logits processing and the default answer extractor."""

from __future__ import annotations

import pytest
import torch

from zhllama.core.evaluation import mcq
from zhllama.plugins.benchmarks.ceval import CEval
from zhllama.plugins.benchmarks.cmmlu import CMMLU
from zhllama.plugins.benchmarks.prompt_styles import cla2_process

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


def test_cmmlu_official_header():
    assert CMMLU().header("computer_network", NAMES, "official") == (
        "以下是关于计算机网络的单项选择题，请直接给出正确答案的选项。\n\n"
    )
    assert CMMLU().header("computer_network", NAMES, "default") == CEval().header("computer_network", NAMES, "default")


def test_prompt_with_template_is_wrapped(merged_tokenizer):
    from zhllama.core.evaluation.runner import McqSettings, question_ids
    from zhllama.core.templates import Message, encode, get_template
    from zhllama.core.tokenizer import ZhTokenizer

    tok = ZhTokenizer(merged_tokenizer)
    text = mcq.build_prompt(Q, [], CEval().header("computer_network", NAMES, "default"))
    template = get_template("llama2-zh")
    assert template.render_text([Message("user", text)]) == (
        "<s>[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n" + text + " [/INST]"
    )
    plain = McqSettings().checked(CEval())
    assert question_ids(CEval(), tok, plain, None, Q, [], NAMES) == tok.encode(text, bos=True)
    wrapped = McqSettings(template="llama2-zh").checked(CEval())
    ids = question_ids(CEval(), tok, wrapped, template, Q, [], NAMES)
    segments = template.segments([Message("user", text)], add_generation_prompt=True)
    assert ids[0] == tok.bos_id and ids == encode(tok, segments)[0]


def test_cla2_logits_processing():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    out = cla2_process(logits, prompt_ids=[0, 1, 1])
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
