"""Fixtures for chat/serve tests: the loaded tiny model (once per session) and a draft model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def zh_model(tiny_zh_model):
    from zhllama.core.engine import open_model

    model = open_model(tiny_zh_model)
    yield model
    model.close()


@pytest.fixture(scope="session")
def draft_model_dir(artifacts, merged_tokenizer):
    """A smaller LLaMA with another seed that shares the Chinese tokenizer (a speculative draft)."""
    from zhllama.core.tiny import TinyShape, build_tiny_llama

    return build_tiny_llama(
        artifacts / "tiny_zh_draft", tokenizer=merged_tokenizer, seed=7, shape=TinyShape(num_hidden_layers=1)
    )


CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def chatml_tokenizer(artifacts):
    """A byte-level BPE tokenizer (GPT-2 style) with ChatML's special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from zhllama.core.assets import data_path

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(data_path("corpus_en.txt")), str(data_path("corpus_zh.txt"))], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML_TEMPLATE
    )
    out = artifacts / "chatml_tokenizer"
    fast.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def chatml_model_dir(artifacts, chatml_tokenizer):
    from zhllama.core.tiny import build_tiny_llama

    return build_tiny_llama(artifacts / "tiny_chatml", tokenizer=chatml_tokenizer, seed=3)
