"""`zhllama quantize` (gguf, 4bit, 8bit) and `zhllama eval ppl` against reference computations."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import shared
from zhllama.core import spm
from zhllama.core.assets import data_path
from zhllama.core.perplexity import hf_nll, perplexity, windows
from zhllama.core.quantize.gguf_export import write_gguf
from zhllama.core.tokenizer import ZhTokenizer

PROBE = torch.tensor([[1, 5, 17, 42, 99, 300, 7, 8, 1000, 1100]])


@pytest.fixture(scope="module")
def padded_model(tmp_path_factory, tiny_zh_model):
    """The tiny Chinese model with its embedding padded past the tokenizer (as training does)."""
    out = tmp_path_factory.mktemp("padded") / "model"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_zh_model))
    rows = -(-len(ZhTokenizer(tiny_zh_model)) // 64) * 64 + 64
    model.resize_token_embeddings(rows, mean_resizing=False)
    model.save_pretrained(str(out))
    ZhTokenizer(tiny_zh_model).save(out)
    return out


@pytest.mark.parametrize("qtype, atol", [("F16", 1e-2), ("Q8_0", 0.1)])
def test_gguf_reads_back_and_matches_hf_logits(tmp_path, padded_model, run_cli, qtype, atol):
    from gguf import GGUFReader

    out = tmp_path / f"m-{qtype}.gguf"
    code, stdout, err = run_cli("--json", "quantize", "gguf", "--model", padded_model, "--type", qtype, "--output", out)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["bytes_after"] == out.stat().st_size and report["ratio"] < 1
    assert json.loads(out.with_name(out.name + ".quantize_report.json").read_text())["method"] == "gguf"
    reader = GGUFReader(str(out))
    fields = reader.fields
    config = json.loads((padded_model / "config.json").read_text())
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    assert int(fields["llama.block_count"].parts[-1][0]) == config["num_hidden_layers"]
    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors["token_embd.weight"].shape) == [config["hidden_size"], config["vocab_size"]]
    assert len(tensors) == 2 + 9 * config["num_hidden_layers"] + 1
    ref = AutoModelForCausalLM.from_pretrained(str(padded_model))
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name)
    with torch.no_grad():
        diff = (ref(PROBE).logits - back(PROBE).logits).abs().max()
    assert diff < atol


def test_gguf_vocab_is_exact_and_padded(tmp_path, padded_model):
    from gguf import GGUFReader

    out = tmp_path / "v.gguf"
    write_gguf(padded_model, out, "F16")
    reader = GGUFReader(str(out))
    f = reader.fields
    tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    proto = spm.load_proto(padded_model)
    n = len(proto.pieces)
    config = json.loads((padded_model / "config.json").read_text())
    assert len(tokens) == config["vocab_size"] > n
    assert tokens[:n] == [p.piece for p in proto.pieces]
    assert scores[:n] == pytest.approx([p.score for p in proto.pieces])
    assert types[:n] == [int(p.type) for p in proto.pieces]
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, config["vocab_size"])] and set(types[n:]) == {5}
    assert {1, 2, 3, 6} <= set(types)  # normal, unknown, control, byte
    assert int(f["tokenizer.ggml.bos_token_id"].parts[-1][0]) == 1
    assert int(f["tokenizer.ggml.eos_token_id"].parts[-1][0]) == 2


@pytest.mark.shared_data
def test_gguf_tokenizer_matches_hf_on_real_merged_vocab(tmp_path):
    from transformers import AutoTokenizer

    from zhllama.core import vocab
    from zhllama.core.tiny import TinyShape, build_tiny_llama

    tok_dir = tmp_path / "tok"
    vocab.merge(shared("tokenizers", "llama_tokenizer.model"), [shared("tokenizers", "chinese_sp.model")], tok_dir)
    model = build_tiny_llama(
        tmp_path / "m", tokenizer=tok_dir, shape=TinyShape(hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    )
    write_gguf(model, tmp_path / "m.gguf", "F16")
    from_gguf = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    ours = ZhTokenizer(tok_dir)
    lines = shared("corpus", "zh_wiki_cmrc2018_contexts.txt").read_text(encoding="utf-8").splitlines()[:200]
    lines += ["我爱北京天安门，hello world 123", "混合English和数字3.14"]
    mismatched = [line for line in lines if from_gguf.encode(line, add_special_tokens=False) != ours.encode(line)]
    assert mismatched == []


def test_bnb_4bit_and_8bit_close_to_fp32_and_reload(tmp_path, tiny_zh_model, run_cli):
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_zh_model))
    with torch.no_grad():
        expected = ref(PROBE).logits
    for method, tol in (("4bit", 0.5), ("8bit", 0.1)):
        out = tmp_path / method
        code, stdout, err = run_cli("--json", "quantize", method, "--model", tiny_zh_model, "--output", out)
        assert code == 0, err
        assert json.loads((out / "quantize_report.json").read_text())["bytes_after"] > 0
        reloaded = AutoModelForCausalLM.from_pretrained(str(out), device_map={"": "cpu"})
        assert getattr(reloaded.config, "quantization_config", None) is not None
        with torch.no_grad():
            got = reloaded(PROBE).logits.float()
        assert (got - expected).abs().max() < tol
        assert not torch.equal(got, expected)  # really quantized


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown", "No such command 'gguff'. Did you mean 'gguf'?"),
        ("not_model", "not a model folder"),
        ("arch", "architecture 'gpt2' is not supported"),
        ("missing_extra", "pip install 'zhllama[gptq]'"),
    ],
)
def test_quantize_bad_input(tmp_path, tiny_zh_model, run_cli, case, message):
    model = tiny_zh_model
    method = {"unknown": "gguff", "missing_extra": "gptq"}.get(case, "gguf")
    if case == "not_model":
        model = tmp_path / "empty"
        model.mkdir()
    if case == "arch":
        model = tmp_path / "gpt2ish"
        shutil.copytree(tiny_zh_model, model)
        config = json.loads((model / "config.json").read_text())
        config["model_type"] = "gpt2"
        (model / "config.json").write_text(json.dumps(config))
    if case == "missing_extra" and __import__("importlib.util").util.find_spec("gptqmodel"):
        pytest.skip("gptqmodel is installed")
    code, _, err = run_cli("quantize", method, "--model", model, "--output", tmp_path / "out.gguf")
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out.gguf").exists()


def test_windows_score_each_token_once():
    assert windows(10, 4, 4) == [(0, 4, 3), (4, 8, 4), (8, 10, 2)]
    assert windows(10, 4, 2) == [(0, 4, 3), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    for n, c, s in ((37, 8, 3), (5, 8, 8), (64, 16, 16)):
        assert sum(new for _, _, new in windows(n, c, s)) == n - 1


def test_ppl_equals_reference_computation(tiny_zh_model):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_zh_model)).eval()
    tok = ZhTokenizer(tiny_zh_model)
    text = "\n".join(data_path("corpus_zh.txt").read_text(encoding="utf-8").splitlines()[:3])
    ids = tok.encode(text, bos=True)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    full = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum").item()
    nll, count = hf_nll(model, ids, context=len(ids), stride=len(ids))
    assert count == len(ids) - 1 and nll == pytest.approx(full, rel=1e-5)
    # stride < context: each token conditioned on the window it is scored in, computed by hand
    context, stride = 24, 8
    expected = 0.0
    for begin, end, new in windows(len(ids), context, stride):
        with torch.no_grad():
            lg = model(torch.tensor([ids[begin:end]])).logits[0]
        for pos in range(end - begin - new, end - begin):
            expected -= torch.log_softmax(lg[pos - 1], -1)[ids[begin + pos]].item()
    nll, count = hf_nll(model, ids, context, stride, batch_size=3)
    assert count == len(ids) - 1 and nll == pytest.approx(expected, rel=1e-5)


def test_eval_ppl_cli(tmp_path, tiny_zh_model, run_cli):
    text = tmp_path / "t.txt"
    text.write_text("中国的首都是北京。长江是中国第一长河。", encoding="utf-8")
    code, out, err = run_cli("--json", "eval", "ppl", "--model", tiny_zh_model, "--data", text, "--context", "8")
    assert code == 0, err
    result = json.loads(out)
    direct = perplexity(tiny_zh_model, text, context=8)
    assert result["perplexity"] == pytest.approx(direct.perplexity) and result["tokens_scored"] == direct.tokens_scored
    assert math.isfinite(result["perplexity"])
    code, _, err = run_cli("eval", "ppl", "--model", tiny_zh_model, "--data", tmp_path / "none.txt")
    assert code == 2 and "none.txt" in err
