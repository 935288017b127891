"""Built-in prompt templates of the Chinese-LLaMA-Alpaca projects (plus ChatML and none).

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
