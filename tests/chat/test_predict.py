"""`zhllama predict`: batched answers equal one-by-one answers, input order, resume, bad input."""

from __future__ import annotations

import json

import pytest

from zhllama.core.engine import GenerationParams
from zhllama.core.generation.batch import answer_batch
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import Message, get_template

PROMPTS = ["你好", "请介绍一下北京的历史和文化。", "上海", "写一首关于春天的诗，要有山有水。", "1+1等于几？"]


@pytest.fixture
def runtime(zh_model):
    return ChatRuntime(zh_model, get_template("llama2-zh"), "m")


def _one(runtime, prompt, params):
    reply = runtime.reply(runtime.prompt_ids([Message("user", prompt)]), params)
    reply.run()
    return reply


@pytest.mark.parametrize("sampled", [False, True])
def test_batched_rows_equal_unbatched_answers(runtime, sampled):
    params = [
        GenerationParams(max_new_tokens=12, greedy=not sampled, temperature=0.8, seed=i) for i in range(len(PROMPTS))
    ]
    ids = [runtime.prompt_ids([Message("user", p)]) for p in PROMPTS]
    answers = answer_batch(runtime, ids, params)
    for prompt, p, got in zip(PROMPTS, params, answers, strict=True):
        expected = _one(runtime, prompt, p)
        assert got.token_ids == expected.token_ids and got.text == expected.text
        assert got.finish_reason == expected.finish_reason


def test_predict_cli_order_resume_and_summary(run_cli, tiny_zh_model, runtime, tmp_path):
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(PROMPTS[:2]) + "\n\n" + "\n".join(PROMPTS[2:]) + "\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    args = ["predict", "-m", tiny_zh_model, "--template", "llama2-zh", "-i", source, "-o", out]
    code, stdout, err = run_cli("--json", *args, "--batch-size", "2", "--greedy", "--max-new-tokens", "8")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["prompts"] == summary["generated"] == 5 and summary["skipped"] == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == PROMPTS and [r["index"] for r in records] == list(range(5))
    params = GenerationParams(max_new_tokens=8, greedy=True, seed=0)
    for r in records:
        expected = _one(runtime, r["prompt"], params)
        assert r["prediction"] == expected.text and r["completion_tokens"] == len(expected.token_ids)
    full = out.read_text(encoding="utf-8")
    # an interrupted run: two records and half a line; the rerun answers only the rest
    lines = full.splitlines()
    out.write_text(lines[3] + "\n" + lines[0] + "\n" + lines[1][:20], encoding="utf-8")
    code, stdout, err = run_cli("--json", *args, "--batch-size", "3", "--greedy", "--max-new-tokens", "8")
    assert code == 0, err
    assert json.loads(stdout)["skipped"] == 2 and json.loads(stdout)["generated"] == 3
    assert out.read_text(encoding="utf-8") == full


def test_predict_seeded_sampling_is_reproducible(run_cli, tiny_zh_model, tmp_path):
    source = tmp_path / "prompts.jsonl"
    rows = [
        {"instruction": "翻译成英文", "input": "你好"},
        {"prompt": "北京", "id": "b"},
        {"prompt": "上海", "system": "你是诗人。"},
    ]
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    outs = []
    for size, name in ((1, "a.jsonl"), (3, "b.jsonl")):
        out = tmp_path / name
        code, _, err = run_cli(
            "predict",
            "-m",
            tiny_zh_model,
            "-i",
            source,
            "-o",
            out,
            "--batch-size",
            str(size),
            "--temperature",
            "0.9",
            "--seed",
            "4",
            "--max-new-tokens",
            "6",
        )
        assert code == 0, err
        outs.append([json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()])
    assert outs[0] == outs[1]
    assert [r["id"] for r in outs[0]] == [0, "b", 2] and outs[0][0]["prompt"] == "翻译成英文\n你好"


def test_predict_bad_input(run_cli, tiny_zh_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n', encoding="utf-8")
    code, _, err = run_cli("predict", "-m", tiny_zh_model, "-i", bad, "-o", tmp_path / "o.jsonl")
    assert code == 2 and f"{bad}:2: needs a non-empty 'prompt'" in err
    good = tmp_path / "p.txt"
    good.write_text("你好\n", encoding="utf-8")
    code, _, err = run_cli("predict", "-m", tiny_zh_model, "-i", good, "-o", tiny_zh_model / "p.jsonl")
    assert code == 2 and "the output sits inside the input" in err
    code, _, err = run_cli("predict", "-m", tiny_zh_model, "-i", good, "-o", tmp_path / "o.txt")
    assert code == 2 and "must be a .jsonl file" in err
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": 0, "prompt": "别的"}\n', encoding="utf-8")
    code, _, err = run_cli("predict", "-m", tiny_zh_model, "-i", good, "-o", other)
    assert code == 2 and "has another prompt" in err
