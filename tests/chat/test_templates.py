"""Templates as the ecosystem does them: the model's own chat template, special tokens as tokens."""

from __future__ import annotations

import pytest

from zhllama.core.errors import UserError
from zhllama.core.templates import IGNORE_INDEX, Message, encode, get_template, resolve_template

CONVERSATIONS = [
    [Message("user", "What is the capital of France?")],
    [Message("system", "你是一个诗人。"), Message("user", "写一首诗")],
    [Message("user", "你好"), Message("assistant", "你好！有什么可以帮你？"), Message("user", "北京在哪里？")],
]


@pytest.fixture(scope="module")
def chatml(chatml_model_dir):
    from transformers import AutoTokenizer

    from zhllama.core.tokenizer import ZhTokenizer

    return ZhTokenizer(chatml_model_dir), AutoTokenizer.from_pretrained(str(chatml_model_dir))


def _dicts(messages):
    return [{"role": m.role, "content": m.content} for m in messages]


@pytest.mark.parametrize("name", ["auto", "hf", "chatml"])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_prompt_ids_equal_apply_chat_template(chatml, name, conversation):
    tok, hf = chatml
    messages = CONVERSATIONS[conversation]
    template = resolve_template(name, tok)
    ids, _ = encode(tok, template.segments(messages, add_generation_prompt=True))
    expected = hf.apply_chat_template(_dicts(messages), add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == list(expected)
    start, end = hf.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids.count(start) == len(messages) + (messages[0].role != "system") + 1  # one per turn + answer
    assert ids.count(end) == ids.count(start) - 1
    assert hf.bos_token_id is None and hf.eos_token_id not in ids[-3:]  # no BOS/EOS the template does not write


def test_training_labels_mark_each_answer_and_its_end_token(chatml):
    tok, hf = chatml
    messages = [
        Message("user", "你好"),
        Message("assistant", "你好！"),
        Message("user", "再见"),
        Message("assistant", "明天见"),
    ]
    end = hf.convert_tokens_to_ids("<|im_end|>")
    for name in ("auto", "chatml"):
        ids, labels = encode(tok, resolve_template(name, tok).segments(messages))
        assert ids == list(hf.apply_chat_template(_dicts(messages), tokenize=True, return_dict=False))
        trained = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
        assert trained == tok.encode("你好！") + [end] + tok.encode("\n") + tok.encode("明天见") + [end] + tok.encode(
            "\n"
        )


def test_user_text_that_spells_a_special_token_stays_text(chatml):
    tok, hf = chatml
    end = hf.convert_tokens_to_ids("<|im_end|>")
    ids, _ = encode(tok, get_template("chatml").segments([Message("user", "<|im_end|>")], add_generation_prompt=True))
    assert ids.count(end) == 2  # system and user turns; the user's literal marker is plain text
    assert tok.decode(ids, skip_special=False).count("<|im_end|>") == 3


def test_end_token_is_a_stop_id(chatml, chatml_model_dir):
    from zhllama.core.engine import GenerationParams
    from zhllama.core.generation.respond import with_template_stops

    tok, hf = chatml
    end = hf.convert_tokens_to_ids("<|im_end|>")
    for name in ("auto", "chatml"):
        template = resolve_template(name, tok)
        assert template.stop_tokens == ("<|im_end|>",)
        assert end in with_template_stops(GenerationParams(), template, tok).stop_token_ids


def test_auto_without_a_chat_template_is_llama2_zh_and_hf_is_refused(merged_tokenizer):
    from zhllama.core.tokenizer import ZhTokenizer

    tok = ZhTokenizer(merged_tokenizer)
    assert tok.chat_template is None
    assert resolve_template("auto", tok).name == "llama2-zh"
    with pytest.raises(UserError, match="--template hf: the model has no chat template"):
        resolve_template("hf", tok)
    with pytest.raises(UserError, match="<|im_start|>: not a special token"):
        encode(tok, get_template("chatml").segments([Message("user", "x")]))


def test_chat_template_jinja_file_is_found(chatml_model_dir, tmp_path):
    import json
    import shutil

    from zhllama.core.tokenizer import ZhTokenizer

    folder = tmp_path / "tok"
    shutil.copytree(chatml_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    source = config.pop("chat_template", None) or (folder / "chat_template.jinja").read_text()
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text(source)
    assert ZhTokenizer(folder).chat_template == source


def test_runtime_uses_the_models_template_by_default(chatml_model_dir):
    from zhllama.core.generation.runtime import load_runtime
    from zhllama.core.loading.options import ModelOptions

    runtime = load_runtime(ModelOptions(model=str(chatml_model_dir)))
    try:
        assert runtime.template.name == "hf"
        hf = runtime.model.tokenizer.hf
        messages = [Message("user", "你好")]
        assert runtime.prompt_ids(messages) == list(
            hf.apply_chat_template(_dicts(messages), add_generation_prompt=True, tokenize=True, return_dict=False)
        )
    finally:
        runtime.close()


# ---- llama3 (Llama-3.x Instruct / Chinese-LLaMA-Alpaca-3) -------------------------------------------
LLAMA3_CHAT_TEMPLATE = (  # Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    """A byte-level BPE tokenizer with Llama-3's special tokens, and the same folder with Meta's template."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    from zhllama.core.assets import data_path
    from zhllama.core.tokenizer import ZhTokenizer

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = (data_path("corpus_en.txt").read_text() + data_path("corpus_zh.txt").read_text()).splitlines()
    trainer = trainers.BpeTrainer(
        vocab_size=800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(text, trainer)
    tok.add_special_tokens(LLAMA3_SPECIALS)
    root = tmp_path_factory.mktemp("llama3tok")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    folders = []
    for name, template in (("plain", None), ("meta", LLAMA3_CHAT_TEMPLATE)):
        folder = root / name
        folder.mkdir()
        tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(
            json.dumps({**config, "chat_template": template} if template else config)
        )
        folders.append(folder)
    return ZhTokenizer(folders[0]), AutoTokenizer.from_pretrained(str(folders[1]))


@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_llama3_prompt_ids_equal_metas_chat_template(llama3, conversation):
    tok, hf = llama3
    assert tok.chat_template is None  # the named template works on a folder without one
    messages = CONVERSATIONS[conversation]
    if messages[0].role != "system":
        messages = [Message("system", "You are a helpful assistant."), *messages]
    ids, _ = encode(tok, get_template("llama3").segments(messages, add_generation_prompt=True))
    expected = hf.apply_chat_template(_dicts(messages), add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == list(expected)


def test_llama3_default_system_answers_labels_and_stops(llama3):
    from zhllama.core.engine import GenerationParams
    from zhllama.core.generation.respond import with_template_stops

    tok, hf = llama3
    template = get_template("llama3")
    messages = [Message("user", " 你好 "), Message("assistant", "你好！"), Message("user", "再见")]
    ids, labels = encode(tok, template.segments(messages))
    system = [Message("system", "You are a helpful assistant. 你是一个乐于助人的助手。"), *messages]
    expected = hf.apply_chat_template(_dicts(system), add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == list(expected)  # contents trimmed, as Meta's template does
    eot = hf.convert_tokens_to_ids("<|eot_id|>")
    trained = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert trained == tok.encode("你好！") + [eot]
    assert ids[0] == hf.convert_tokens_to_ids("<|begin_of_text|>") and ids.count(hf.bos_token_id) == 1
    assert eot in with_template_stops(GenerationParams(), template, tok).stop_token_ids
