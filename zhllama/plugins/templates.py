"""Built-in prompt templates of the Chinese-LLaMA-Alpaca projects (plus ChatML, Llama-3 and none).

The model's own chat template (`--template auto`/`hf`) is `zhllama.core.templates.ChatTemplate`.
"""

from __future__ import annotations

from collections.abc import Sequence

from zhllama.core.templates import BOS, EOS, Message, Segment, Special, Template


class Alpaca(Template):
    name = "alpaca"
    description = "1st-generation Chinese-Alpaca (Stanford Alpaca prompt)"
    header = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    )

    def segments(self, messages: Sequence[Message], system=None, add_generation_prompt=False):
        _system, turns = self.split_turns(messages)
        header = system if system is not None else (_system if _system is not None else self.header)
        segs: list[Segment] = [BOS]
        for i, (user, answer) in enumerate(turns):
            prefix = header if i == 0 else "\n\n"
            segs.append(Segment(f"{prefix}### Instruction:\n{user}\n\n### Response: "))
            if answer is not None:
                segs += [Segment(answer, train=True), EOS(train=True)]
        return segs


class Llama2Zh(Template):
    name = "llama2-zh"
    description = "2nd-generation Chinese-LLaMA-2/Alpaca-2 ([INST] <<SYS>> ... [/INST]); the default"
    default_system = "You are a helpful assistant. 你是一个乐于助人的助手。"

    def segments(self, messages: Sequence[Message], system=None, add_generation_prompt=False):
        _system, turns = self.split_turns(messages)
        system = system if system is not None else (_system if _system is not None else self.default_system)
        segs: list[Segment] = []
        for i, (user, answer) in enumerate(turns):
            text = f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]" if i == 0 else f"[INST] {user} [/INST]"
            segs += [BOS, Segment(text)]
            if answer is not None:
                segs += [Segment(answer, train=True), EOS(train=True)]
        return segs


class ChatML(Template):
    name = "chatml"
    description = "ChatML (<|im_start|>role ... <|im_end|> as special tokens; no BOS/EOS)"
    default_system = "You are a helpful assistant."
    stop_strings = ("<|im_end|>",)
    stop_tokens = ("<|im_end|>",)

    def segments(self, messages: Sequence[Message], system=None, add_generation_prompt=False):
        _system, turns = self.split_turns(messages)
        system = system if system is not None else (_system if _system is not None else self.default_system)
        start, end = Special("<|im_start|>"), Special("<|im_end|>")
        segs: list[Segment] = [start, Segment(f"system\n{system}"), end, Segment("\n")]
        for user, answer in turns:
            segs += [start, Segment(f"user\n{user}"), end, Segment("\n"), start, Segment("assistant\n")]
            if answer is not None:
                segs += [Segment(answer, train=True), Special("<|im_end|>", train=True), Segment("\n", train=True)]
        return segs


class Llama3(Template):
    """Meta's Llama-3 Instruct format, as its own chat template renders it (contents trimmed).

    The default system prompt is Chinese-LLaMA-Alpaca-3's (its `scripts` use this exact text);
    Meta's template itself writes no system block unless one is given.
    """

    name = "llama3"
    description = (
        "Llama-3.x Instruct / Chinese-LLaMA-Alpaca-3 (<|start_header_id|>role<|end_header_id|> ... <|eot_id|>)"
    )
    default_system = "You are a helpful assistant. 你是一个乐于助人的助手。"
    stop_strings = ("<|eot_id|>",)
    stop_tokens = ("<|eot_id|>", "<|end_of_text|>")

    def segments(self, messages: Sequence[Message], system=None, add_generation_prompt=False):
        _system, turns = self.split_turns(messages)
        system = system if system is not None else (_system if _system is not None else self.default_system)
        head, end = Special("<|start_header_id|>"), Special("<|end_header_id|>")
        eot = "<|eot_id|>"
        segs: list[Segment] = [Special("<|begin_of_text|>")]
        if system:
            segs += [head, Segment("system"), end, Segment("\n\n" + system.strip()), Special(eot)]
        for user, answer in turns:
            segs += [head, Segment("user"), end, Segment("\n\n" + user.strip()), Special(eot)]
            segs += [head, Segment("assistant"), end, Segment("\n\n")]
            if answer is not None:
                segs += [Segment(answer.strip(), train=True), Special(eot, train=True)]
        return segs


class NoTemplate(Template):
    name = "none"
    description = "no template: the user text is the prompt (base models)"

    def segments(self, messages: Sequence[Message], system=None, add_generation_prompt=False):
        _system, turns = self.split_turns(messages)
        segs: list[Segment] = [BOS]
        for user, answer in turns:
            segs.append(Segment(user))
            if answer is not None:
                segs += [Segment(answer, train=True), EOS(train=True)]
        return segs
