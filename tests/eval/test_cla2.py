"""`--prompt-style cla2`: the Chinese-LLaMA-Alpaca-2 C-Eval/CMMLU evaluators, string for string.

The expected strings are written out by hand from the reference scripts' behaviour
(scripts/ceval/llama_evaluator.py, scripts/cmmlu/llama2_evaluator.py): 0-shot has no header; with
a template only the question is wrapped; 5-shot with a template is a multi-turn history.
"""

from __future__ import annotations

import pytest

from zhllama.core.errors import UserError
from zhllama.core.evaluation import mcq
from zhllama.core.evaluation.runner import McqSettings, question_ids
from zhllama.core.tokenizer import ZhTokenizer
from zhllama.plugins.benchmarks import prompt_styles as styles
from zhllama.plugins.benchmarks.ceval import CEval
from zhllama.plugins.benchmarks.cmmlu import CMMLU

Q = mcq.Question("computer_network", "0", "HTTP默认端口是____。", ("21", "80", "25", "53"), "B")
S1 = mcq.Question("computer_network", "1", "IPv4地址长____位。", ("16", "32", "64", "128"), "B")
S2 = mcq.Question("computer_network", "2", "DNS使用的端口是____。", ("53", "80", "21", "23"), "A")
EN_ZH = "You are a helpful assistant. 你是一个乐于助人的助手。"
QUESTION = "HTTP默认端口是____。\nA. 21\nB. 80\nC. 25\nD. 53\n答案："


def test_zero_shot_plain_is_the_bare_question():
    assert styles.cla2_prompt(Q, [], "computer_network", None) == QUESTION


def test_zero_shot_with_template_wraps_only_the_question():
    assert styles.cla2_prompt(Q, [], "computer_network", EN_ZH) == (
        "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n"
        "HTTP默认端口是____。\nA. 21\nB. 80\nC. 25\nD. 53\n答案： [/INST]"
    )


def test_few_shot_plain_has_the_english_key_header():
    assert styles.cla2_prompt(Q, [S1, S2], "computer_network", None) == (
        "以下是中国关于computer_network考试的单项选择题，请选出其中的正确答案。\n\n"
        "IPv4地址长____位。\nA. 16\nB. 32\nC. 64\nD. 128\n答案：B\n\n"
        "DNS使用的端口是____。\nA. 53\nB. 80\nC. 21\nD. 23\n答案：A\n\n"
        "HTTP默认端口是____。\nA. 21\nB. 80\nC. 25\nD. 53\n答案："
    )


def test_few_shot_with_template_is_a_multi_turn_history():
    assert styles.cla2_prompt(Q, [S1, S2], "computer_network", "你是一个乐于助人的助手。") == (
        "[INST] <<SYS>>\n你是一个乐于助人的助手。\n<</SYS>>\n\n"
        "以下是中国关于computer_network考试的单项选择题，请选出其中的正确答案。\n\n [/INST]"
        "好的，我会结合computer_network相关知识回答"
        "[INST] IPv4地址长____位。\nA. 16\nB. 32\nC. 64\nD. 128\n答案：[/INST]B\n"
        "[INST] DNS使用的端口是____。\nA. 53\nB. 80\nC. 21\nD. 23\n答案：[/INST]A\n"
        "[INST] <<SYS>>\n你是一个乐于助人的助手。\n<</SYS>>\n\n"
        "HTTP默认端口是____。\nA. 21\nB. 80\nC. 25\nD. 53\n答案： [/INST]"
    )


def test_system_prompts_per_benchmark():
    assert CEval().prompt_styles["cla2"].system == EN_ZH
    assert CMMLU().prompt_styles["cla2"].system == "你是一个乐于助人的助手。"


class FakeTokenizer(ZhTokenizer):
    """Ids are the code points (enough to compare texts); checks the reference switch is asked for."""

    bos_id = 1

    def __init__(self):
        pass

    def encode(self, text, bos=False, eos=False, special=False, legacy=False):
        assert legacy, "cla2 prompts are read as the reference's LlamaTokenizer reads them"
        return ([1] if bos else []) + [ord(c) for c in text]


def decoded(ids):
    assert ids[0] == 1  # BOS first, exactly once
    return "".join(chr(i) for i in ids[1:])


@pytest.mark.parametrize("benchmark", [CEval(), CMMLU()])
def test_runner_feeds_the_reference_text_for_each_setting(benchmark):
    from zhllama.core.templates import get_template

    tok = FakeTokenizer()
    for shots in ([], [S1, S2]):
        for template in (None, get_template("llama2-zh")):
            settings = McqSettings(prompt_style="cla2", template=template and "llama2-zh").checked(benchmark)
            ids = question_ids(benchmark, tok, settings, template, Q, shots, {})
            system = benchmark.prompt_styles["cla2"].system if template else None
            assert decoded(ids) == styles.cla2_prompt(Q, shots, "computer_network", system)
    custom = McqSettings(prompt_style="cla2", template="llama2-zh", system_prompt="你好").checked(benchmark)
    ids = question_ids(benchmark, tok, custom, get_template("llama2-zh"), Q, [], {})
    assert decoded(ids).startswith("[INST] <<SYS>>\n你好\n<</SYS>>\n\n")


def test_cla2_refuses_other_templates_and_system_prompt_needs_a_template():
    with pytest.raises(UserError, match="--template: --prompt-style cla2"):
        McqSettings(prompt_style="cla2", template="alpaca").checked(CEval())
    with pytest.raises(UserError, match="--system-prompt: needs --template"):
        McqSettings(system_prompt="x").checked(CEval())
    with pytest.raises(UserError, match="--prompt-style for ceval"):
        McqSettings(prompt_style="official").checked(CEval())
    assert McqSettings(prompt_style="cla2").checked(CEval()).max_new_tokens == 20
    assert McqSettings().checked(CEval()).max_new_tokens == 32
    assert McqSettings().checked(CMMLU()).split == "test"
    assert McqSettings().checked(CEval()).split == "val"


# The reference evaluators' argparse defaults, as written in scripts/ceval/eval.py and scripts/cmmlu/eval.py:
#   --few_shot True, --ntrain 5, --with_prompt False; --constrained_decoding True (C-Eval) / False (CMMLU)
REFERENCE_DEFAULTS = {
    "ceval": {"few_shot": "True", "ntrain": 5, "with_prompt": "False", "constrained_decoding": "True"},
    "cmmlu": {"few_shot": "True", "ntrain": 5, "with_prompt": "False", "constrained_decoding": "False"},
}


@pytest.mark.parametrize("benchmark", [CEval(), CMMLU()])
def test_cla2_defaults_are_the_reference_scripts_defaults(benchmark):
    ref = REFERENCE_DEFAULTS[benchmark.name]
    settings = McqSettings(prompt_style="cla2").checked(benchmark)
    assert settings.shots == (ref["ntrain"] if ref["few_shot"] == "True" else 0)
    # constrained decoding = one forward pass scoring the letters (logits); otherwise free generation
    assert settings.mode == ("logits" if ref["constrained_decoding"] == "True" else "generate")
    assert (settings.template is None) == (ref["with_prompt"] == "False")
    # explicit flags win; the default style keeps 0-shot logits
    explicit = McqSettings(prompt_style="cla2", shots=0, mode="logits").checked(benchmark)
    assert (explicit.shots, explicit.mode) == (0, "logits")
    assert (McqSettings().checked(benchmark).shots, McqSettings().checked(benchmark).mode) == (0, "logits")
    with pytest.raises(UserError, match="--shots: 6"):
        McqSettings(prompt_style="cla2", shots=6).checked(benchmark)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("分析如下。所以答案是C。", "C"),  # 1: the last conclusion when it is a letter
        ("所以答案是B。后来想想所以答案是D。", "D"),
        ("所以答案是80。B是正确的", "B"),  # conclusion not a letter: patterns
        ("答案是A，选项D正确", "D"),  # patterns in the reference's order: '选项X正确' before '答案是X'
        ("答案：C", "C"),
        ("我选择答案B", "B"),  # '选择X' does not match '选择答案B'; '答案X' does
        ("端口是B", "B"),  # 3: the first letter anywhere
        ("端口53和80", "D"),  # 4: the option text found first in the text ('53' before '80')
        ("端口为80", "B"),
        ("不知道", None),  # the reference guesses at random here; we record no answer
    ],
)
def test_cla2_extraction(text, expected):
    assert styles.extract_answer_cla2(text, Q.options) == expected


def test_option_text_fallback_is_leftmost_then_first_listed():
    options = ("北京", "北京市", "上海", "广州")
    assert mcq.first_option_mentioned("首都是北京市", options) == "A"  # alternation: A matches first at that spot
    assert mcq.first_option_mentioned("上海和北京", options) == "C"
    assert mcq.first_option_mentioned("x", ("same", "same", "", "z")) is None
    assert (
        mcq.first_option_mentioned("same", ("same", "same", "", "z")) == "B"
    )  # a shared text maps to the later letter
    assert mcq.extract_answer("上海和北京", options) == "C"  # default style falls back the same way
