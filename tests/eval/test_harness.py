"""The lm-evaluation-harness bridge: `zhllama` as an lm-eval model, checked against plain transformers.

Offline: the C-Eval tasks are lm-eval's own task YAMLs with the dataset swapped for local files
written into tmp_path (`zhllama.harness.tasks.write_ceval_tasks`) from the shared C-Eval data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lm_eval")

from tests.conftest import shared  # noqa: E402

SUBJECT = "computer_network"
TASK = f"zh-ceval-valid_{SUBJECT}"
HEADER = "以下是中国关于计算机网络的单项选择题，请选出其中的正确答案。\n\n"  # lm-eval's ceval description


@pytest.fixture(scope="module")
def ceval_tasks(tmp_path_factory):
    from zhllama.harness.tasks import write_ceval_tasks

    out = tmp_path_factory.mktemp("tasks")
    names = write_ceval_tasks(shared("ceval"), out, [SUBJECT, "high_school_physics"])
    assert names == [TASK, "zh-ceval-valid_high_school_physics"]
    return out


def hf_loglikelihood(model_dir, context: str, continuation: str) -> tuple[float, bool]:
    """log P(continuation | context) with one plain transformers forward pass (lm-eval's token split)."""
    import torch
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer

    tok = ZhTokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    whole, ctx = tok.encode(context + continuation, bos=True), tok.encode(context, bos=True)
    cont = whole[len(ctx) :]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    rows = logp[len(ctx) - 1 : len(whole) - 1]
    target = torch.tensor(cont)
    return float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())


def run_harness(run_cli, model, tasks_dir, out, *extra):
    code, stdout, err = run_cli(
        "--json", "eval", "harness", "-m", model, "--tasks", TASK, "--include-path", tasks_dir, "-o", out,
        "--limit", "3", "--log-samples", *extra,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    samples = [json.loads(line) for line in (out / f"samples_{TASK}.jsonl").read_text(encoding="utf-8").splitlines()]
    return summary, samples


def test_ceval_task_on_hf_folder_equals_transformers(run_cli, tiny_zh_model, ceval_tasks, tmp_path):
    import csv

    summary, samples = run_harness(run_cli, tiny_zh_model, ceval_tasks, tmp_path / "hf")
    assert len(samples) == 3
    with open(shared("ceval", "val", f"{SUBJECT}_val.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:3]
    correct = 0
    for sample, row in zip(sorted(samples, key=lambda s: s["doc_id"]), rows, strict=True):
        context = (
            f"{HEADER}{row['question'].strip()}\nA. {row['A']}\nB. {row['B']}\nC. {row['C']}\nD. {row['D']}\n答案："
        )
        args = [tuple(a) for a in sample["arguments"]]
        assert args == [(context, f" {letter}") for letter in "ABCD"]  # lm-eval's own prompt, target " X"
        got = [tuple(r[0]) for r in sample["resps"]]
        expected = [hf_loglikelihood(tiny_zh_model, c, x) for c, x in args]
        assert [g[1] for g in got] == [e[1] for e in expected]
        assert [g[0] for g in got] == pytest.approx([e[0] for e in expected], abs=1e-4)
        best = max(range(4), key=lambda i: expected[i][0])
        correct += int("ABCD"[best] == row["answer"])
    assert summary["results"][TASK]["acc,none"] == pytest.approx(correct / 3)


def test_ceval_task_on_gguf_equals_hf_folder(run_cli, tiny_zh_model, ceval_tasks, tmp_path):
    pytest.importorskip("llama_cpp")
    from zhllama.core.quantize.gguf_export import write_gguf

    gguf = tmp_path / "tiny.gguf"
    write_gguf(tiny_zh_model, gguf, "F32")
    _, on_gguf = run_harness(run_cli, gguf, ceval_tasks, tmp_path / "gguf", "--num-fewshot", "2")
    _, on_hf = run_harness(run_cli, tiny_zh_model, ceval_tasks, tmp_path / "hf2", "--num-fewshot", "2")
    assert len(on_gguf) == len(on_hf) == 3
    for a, b in zip(sorted(on_gguf, key=lambda s: s["doc_id"]), sorted(on_hf, key=lambda s: s["doc_id"]), strict=True):
        assert a["arguments"] == b["arguments"] and a["arguments"][0][0].count("答案：") == 3  # 2 shots + question
        assert [r[0][0] for r in a["resps"]] == pytest.approx([r[0][0] for r in b["resps"]], abs=2e-2)


@pytest.mark.slow
def test_lm_eval_cli_with_zhllama_model(tiny_zh_model, ceval_tasks, tmp_path):
    """`python -m zhllama.harness` is lm-eval's own CLI with `--model zhllama` registered."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    args = ["--model", "zhllama", "--model_args", f"model={tiny_zh_model}", "--tasks", TASK]
    args += ["--include_path", str(ceval_tasks), "--limit", "2", "--output_path", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-m", "zhllama.harness", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert len(results) == 1
    data = json.loads(results[0].read_text())
    assert data["config"]["model"] == "zhllama" and TASK in data["results"]


def make_lm(model_dir, **kwargs):
    from zhllama.harness import register

    register()
    from lm_eval.api.registry import get_model

    return get_model("zhllama").create_from_arg_string(f"model={model_dir}", kwargs)


def instance(request_type, args):
    from lm_eval.api.instance import Instance

    return Instance(request_type=request_type, doc={}, arguments=args, idx=0)


def test_loglikelihood_rolling_and_generate_until_equal_transformers(tiny_zh_model):
    import torch
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer

    text = "北京是中国的首都，也是一座历史悠久的城市。上海是中国最大的城市。"
    tok = ZhTokenizer(tiny_zh_model)
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_zh_model), dtype=torch.float32)
    ids = tok.encode(text)

    def score(context, continuation):
        seq = (context + continuation)[:-1]
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([seq])).logits[0], -1)[-len(continuation) :]
        return float(logp.gather(1, torch.tensor(continuation)[:, None]).sum())

    for context_length in (None, 8):  # one window; several disjoint windows of the model's context
        lm = make_lm(tiny_zh_model, **({"context_length": context_length} if context_length else {}))
        limit = context_length or lm.max_length
        windows = [make_disjoint_window(w) for w in get_rolling_token_windows(ids, tok.bos_id, limit, 1)]
        assert (len(windows) > 2) == (context_length is not None)
        expected = sum(score(c, x) for c, x in windows)
        [got] = lm.loglikelihood_rolling([instance("loglikelihood_rolling", (text,))])
        assert got == pytest.approx(expected, abs=1e-3)

    lm = make_lm(tiny_zh_model)
    prompt = "北京是"
    with torch.no_grad():
        out = hf.generate(torch.tensor([tok.encode(prompt, bos=True)]), max_new_tokens=12, do_sample=False)
    full = tok.decode(out[0, len(tok.encode(prompt, bos=True)) :].tolist())
    assert len(full) > 4
    until = full[3:5]
    [plain, cut] = lm.generate_until(
        [
            instance("generate_until", (prompt, {"max_gen_toks": 12, "until": []})),
            instance("generate_until", (prompt, {"max_gen_toks": 12, "until": [until]})),
        ]
    )
    assert plain == full and cut == full[: full.index(until)]


def test_model_args_and_bad_input(tiny_zh_model, run_cli, tmp_path, ceval_tasks):
    from zhllama.core.errors import UserError
    from zhllama.harness.lm import model_options

    options = model_options("m", lora="a;b", context_length="64", engine="llamacpp")
    assert [str(p) for p in options.lora] == ["a", "b"] and options.context_length == 64
    with pytest.raises(UserError, match="unknown argument 'lorra'"):
        model_options("m", lorra="x")
    with pytest.raises(UserError, match="model=PATH is required"):
        model_options(None)
    code, out, err = run_cli("eval", "harness", "-m", tiny_zh_model, "--tasks", "zh-ceval-vald", "-o", tmp_path / "o",
                             "--include-path", ceval_tasks)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "unknown task 'zh-ceval-vald' (did you mean 'zh-ceval-valid'" in err
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(
        "eval", "harness", "-m", tiny_zh_model, "--tasks", TASK, "-o", tmp_path / "o", "--limit", "0"
    )
    assert code == 2 and "--limit: must be at least 1" in err
