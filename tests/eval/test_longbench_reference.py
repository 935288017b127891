"""LongBench prompts and predictions as Chinese-LLaMA-Alpaca-2's `scripts/longbench/pred_llama2.py`:

    tokenized_prompt = tokenizer(prompt, truncation=False, return_tensors="pt").input_ids[0]
    if len(tokenized_prompt) > max_length:
        half = int(max_length/2)
        prompt = tokenizer.decode(tokenized_prompt[:half], skip_special_tokens=True)
               + tokenizer.decode(tokenized_prompt[-half:], skip_special_tokens=True)
    ...
    pred = tokenizer.decode(output[context_length:], skip_special_tokens=True)

with `tokenizer = LlamaTokenizer.from_pretrained(model_path, legacy=True)` (transformers 4.x): each
decode cuts one leading '▁' off its first piece before sentencepiece joins the pieces, so a half
that starts with a whitespace piece, and an answer that starts with indentation, keep one space fewer.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import shared
from tests.eval.test_reference_tokenization import reference_detokenize, reference_tokenize
from zhllama.core.engine import LoadedModel
from zhllama.core.evaluation.longbench import LongBenchSettings, build_ids, run_longbench, truncate_middle
from zhllama.core.tokenizer import ZhTokenizer
from zhllama.plugins.benchmarks.longbench import LongBench


def reference_truncate(tok: ZhTokenizer, prompt: str, max_length: int) -> str:
    added = tok.legacy_special_tokens
    ids = [tok.bos_id, *reference_tokenize(tok.sp, added, prompt)]
    if len(ids) > max_length:
        half = int(max_length / 2)
        special = set(added.values())
        prompt = reference_detokenize(tok.sp, special, ids[:half]) + reference_detokenize(tok.sp, special, ids[-half:])
    return prompt


CODE = (
    "class Stack:\n"
    "    def __init__(self):\n"
    "        self.items = []\n"
    "\n"
    "    def push(self, item):\n"
    "        if item == '</s>':\n"
    "            raise ValueError('</s> is not an item')\n"
    "        self.items.append(item)\n"
    "\n"
    "    def pop(self):\n"
    "        return self.items.pop()\n"
)


def whitespace_led_cuts(tok: ZhTokenizer, prompt: str, lengths) -> list[int]:
    """The max lengths whose second half starts with a piece of spaces only ('▁▁▁▁▁▁▁')."""
    ids = tok.encode(prompt, bos=True, legacy=True)
    found = []
    for max_length in lengths:
        if len(ids) > max_length and set(tok.id_to_piece(ids[-(max_length // 2)])) == {"▁"}:
            found.append(max_length)
    return found


@pytest.fixture(scope="module")
def tiny_tok(merged_tokenizer):
    return ZhTokenizer(merged_tokenizer)


def test_truncation_equals_the_reference_rule_on_code(tiny_tok):
    prompt = "请补全代码。\n" + CODE * 6 + "下一行："
    cuts = whitespace_led_cuts(tiny_tok, prompt, range(20, 400))
    assert len(cuts) >= 5
    for max_length in range(20, 400):
        assert truncate_middle(tiny_tok, prompt, max_length) == reference_truncate(tiny_tok, prompt, max_length)
    # where the second half starts with spaces, the reference keeps one space fewer than sentencepiece
    max_length = cuts[0]
    ids = tiny_tok.encode(prompt, bos=True, legacy=True)
    plain = tiny_tok.decode(ids[: max_length // 2]) + tiny_tok.decode(ids[-(max_length // 2) :])
    got = truncate_middle(tiny_tok, prompt, max_length)
    assert len(plain) - len(got) == 1 and plain.replace(" ", "") == got.replace(" ", "")


@pytest.mark.shared_data
def test_truncation_equals_the_reference_rule_with_the_cla2_tokenizer(tmp_path):
    folder = tmp_path / "cla2"
    folder.mkdir()
    for src, dst in (
        ("chinese_llama2_tokenizer.model", "tokenizer.model"),
        ("chinese_llama2_tokenizer_config.json", "tokenizer_config.json"),
        ("chinese_llama2_special_tokens_map.json", "special_tokens_map.json"),
    ):
        (folder / dst).write_bytes(shared("tokenizers", src).read_bytes())
    tok = ZhTokenizer(folder)
    wiki = shared("corpus", "zh_wiki_cmrc2018_contexts.txt").read_text(encoding="utf-8").splitlines()[0]
    prompt = wiki[:300] + "\n" + CODE * 4 + "\n" + wiki[300:600]
    cuts = whitespace_led_cuts(tok, prompt, range(16, 500))
    assert cuts
    for max_length in range(16, 500, 3):
        assert truncate_middle(tok, prompt, max_length) == reference_truncate(tok, prompt, max_length)
    for max_length in cuts:
        assert truncate_middle(tok, prompt, max_length) == reference_truncate(tok, prompt, max_length)
    # the reference re-encodes the joined text as a whole, '</s>' quoted in code as EOS
    ids = build_ids(tok, CODE, 10_000, None, "lcc")
    assert ids[0] == 1 and ids.count(2) == 2


class ScriptedModel(LoadedModel):
    """A model that 'generates' fixed ids: enough to check how predictions are decoded and scored."""

    context_length = 4096

    def __init__(self, tokenizer, answer_ids):
        self.tokenizer = tokenizer
        self.answer_ids = answer_ids
        self.prompts = []

    def next_token_logits(self, batch):
        raise NotImplementedError

    def generate(self, prompt_ids, params, stopper=None):
        self.prompts.append(list(prompt_ids))
        for token in self.answer_ids:
            if stopper.is_end(token):
                return
            stopper.push(token)
            yield token
            if stopper.done:
                return


def test_predictions_decode_as_the_reference(tmp_path, tiny_tok):
    sp = tiny_tok.sp
    answer = tiny_tok.encode("   return a + b")  # an answer that starts with indentation
    assert [tiny_tok.id_to_piece(i) for i in answer[:4]] == ["▁", "▁", "▁", "▁re"]
    data = tmp_path / "lb"
    data.mkdir()
    sample = {"input": "", "context": CODE, "answers": ["  return a + b"], "all_classes": None, "_id": "0"}
    (data / "lcc.jsonl").write_text(json.dumps(sample) + "\n", encoding="utf-8")
    model = ScriptedModel(tiny_tok, [*answer, tiny_tok.eos_id, *answer])
    summary = run_longbench(LongBench(), model, data, tmp_path / "out", LongBenchSettings(tasks="lcc"))
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()[0])
    assert tiny_tok.decode(answer) == "   return a + b"  # sentencepiece's own decode: three spaces
    assert record["prediction"] == "  return a + b"  # the reference's: two
    assert summary["tasks"]["lcc"]["score"] == 100.0  # lcc's edit-similarity of identical strings
    # the prompt: BOS + the whole text read as the reference's tokenizer reads it ('</s>' -> EOS)
    prompt = LongBench().tasks(data)["lcc"]["prompt"].format(**sample)
    assert CODE in prompt
    assert model.prompts[0] == [tiny_tok.bos_id, *reference_tokenize(sp, tiny_tok.legacy_special_tokens, prompt)]
    assert model.prompts[0].count(tiny_tok.eos_id) == 2


def test_samsum_stops_at_the_first_newline(tmp_path, tiny_tok):
    from zhllama.core.evaluation.longbench import stop_ids

    newline = tiny_tok.encode("\n", legacy=True)[-1]
    assert stop_ids(tiny_tok, "samsum") == (tiny_tok.eos_id, newline)
    assert stop_ids(tiny_tok, "lcc") == (tiny_tok.eos_id,)
    data = tmp_path / "lb"
    data.mkdir()
    (data / "dataset2prompt.json").write_text(json.dumps({"samsum": "{context}\n{input}"}))
    (data / "dataset2maxlen.json").write_text(json.dumps({"samsum": 128}))
    sample = {"input": "Summary:", "context": "A: hi", "answers": ["hi"], "all_classes": None, "_id": "0"}
    (data / "samsum.jsonl").write_text(json.dumps(sample) + "\n", encoding="utf-8")
    words = tiny_tok.encode("hi there", legacy=True)
    model = ScriptedModel(tiny_tok, [*words, newline, *words])
    run_longbench(LongBench(), model, data, tmp_path / "out", LongBenchSettings(tasks="samsum"))
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["prediction"] == "hi there"
