"""Prompt templates: exact strings and exact label masks."""

from __future__ import annotations

from zhllama.core.templates import IGNORE_INDEX, Message, encode, get_template

ALPACA_HEADER = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)
SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"


def conv(*texts: str) -> list[Message]:
    return [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]


def test_alpaca_exact():
    text = get_template("alpaca").render_text(conv("写一首诗", "床前明月光"))
    assert text == f"<s>{ALPACA_HEADER}### Instruction:\n写一首诗\n\n### Response: 床前明月光</s>"


def test_llama2_zh_exact_single_and_multi_turn():
    t = get_template("llama2-zh")
    assert t.render_text(conv("你好")) == f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n你好 [/INST]"
    assert t.render_text(conv("你好", "你好！", "再见", "再见！")) == (
        f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n你好 [/INST] 你好！</s><s>[INST] 再见 [/INST] 再见！</s>"
    )
    assert t.render_text(conv("hi"), system="S") == "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nhi [/INST]"


def test_chatml_exact():
    text = get_template("chatml").render_text(conv("问", "答"))
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n问<|im_end|>\n"
        "<|im_start|>assistant\n答<|im_end|>\n"
    )


def test_label_mask_trains_every_answer_and_eos_only(merged_tokenizer):
    from zhllama.core.tokenizer import ZhTokenizer

    tok = ZhTokenizer(merged_tokenizer)
    t = get_template("llama2-zh")
    ids, labels = encode(tok, t.segments(conv("你好", "天气很好", "再见", "明天见")))
    p1 = tok.encode(f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n你好 [/INST]")
    a1 = tok.encode("天气很好")
    p2 = tok.encode("[INST] 再见 [/INST]")
    a2 = tok.encode("明天见")
    bos, eos = tok.bos_id, tok.eos_id
    assert ids == [bos, *p1, *a1, eos, bos, *p2, *a2, eos]
    m = IGNORE_INDEX
    assert labels == [m] * (1 + len(p1)) + a1 + [eos] + [m] * (1 + len(p2)) + a2 + [eos]
    ids_t, labels_t = encode(tok, t.segments(conv("你好", "天气很好")), max_length=5)
    assert len(ids_t) == len(labels_t) == 5 and ids_t == ids[:5]
