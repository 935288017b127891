"""Benchmarks end to end on a tiny model: files, counts, batching equality, resume, submission, LongBench."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tests.conftest import shared
from zhllama.core.assets import data_path
from zhllama.core.engine import open_model
from zhllama.core.evaluation.runner import McqSettings, run_mcq
from zhllama.plugins.benchmarks.ceval import CEval
from zhllama.plugins.benchmarks.cmmlu import CMMLU

# the first three computer_network questions' letter scores, from a run of the seeded tiny model
PINNED = {
    "default": [0.4916, 0.1885, -0.0051, -0.0132, 0.5338, 0.2001, 0.0194, -0.0155, 0.5362, 0.1927, 0.0449, 0.0179],
    "cla2": [2.2601, 0.8761, -0.0538, -0.0348, 2.3752, 0.9074, 0.0219, -0.041, 2.3672, 0.884, 0.0779, 0.0443],
}
PINNED_LETTERS = {"default": "A", "cla2": "A"}


@pytest.fixture(scope="module")
def model(tiny_zh_model):
    loaded = open_model(tiny_zh_model)
    yield loaded
    loaded.close()


def predictions(folder):
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    return {(r["subject"], r["id"]): r for r in rows}


def test_batched_predictions_equal_one_at_a_time(tmp_path, model):
    data = data_path("ceval")
    run_mcq(CEval(), model, data, tmp_path / "one", McqSettings(shots=2, batch_size="1"))
    run_mcq(CEval(), model, data, tmp_path / "many", McqSettings(shots=2, batch_size="7"))
    run_mcq(CEval(), model, data, tmp_path / "auto", McqSettings(shots=2, batch_size="auto"))
    one, many, auto = (predictions(tmp_path / n) for n in ("one", "many", "auto"))
    assert one.keys() == many.keys() == auto.keys() and len(one) == 24
    for key in one:
        assert one[key]["prediction"] == many[key]["prediction"] == auto[key]["prediction"]
        for letter in "ABCD":
            assert one[key]["scores"][letter] == pytest.approx(many[key]["scores"][letter], abs=1e-4)


def test_summary_counts_plot_and_cli(tmp_path, tiny_zh_model, run_cli):
    out = tmp_path / "res"
    code, stdout, err = run_cli(
        "--json",
        "eval",
        "ceval",
        "--model",
        tiny_zh_model,
        "--data-dir",
        data_path("ceval"),
        "--output",
        out,
        "--shots",
        "1",
        "--plot",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["overall"]["total"] == 24
    assert set(summary["categories"]) == {"STEM", "Humanities"}
    assert summary["categories"]["STEM"]["total"] == 16
    assert summary["subjects"]["computer_network"]["total"] == 8
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["overall"] == summary["overall"]
    _check_categories_plot(out / "categories.png", summary["categories"])
    record = next(iter(predictions(out).values()))
    assert set(record) >= {"prompt_hash", "scores", "prediction", "gold", "correct"}
    # the top-level alias is the same command
    code, stdout2, err = run_cli(
        "--json", "ceval", "--model", tiny_zh_model, "--data-dir", data_path("ceval"), "--output", out, "--shots", "1"
    )
    assert code == 0, err
    assert json.loads(stdout2)["overall"] == summary["overall"]
    assert "resuming: 24 of 24" in err


def _check_categories_plot(path, categories: dict) -> None:
    """The plot is a PNG of the figure's size with one bar per category with a non-zero accuracy, left to
    right in the summary's order, each as tall as its accuracy (the y axis runs 0-100)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(100 * max(4, 1.2 * len(categories))), 350)  # figsize x dpi 100
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # not blank: axes, labels, text
    bar = (np.abs(pixels - (0x4C, 0x72, 0xB0)).sum(axis=-1) == 0).sum(axis=0)  # bar-coloured pixels per column
    columns = np.flatnonzero(bar)
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1) if len(columns) else []
    accuracies = [c["accuracy"] for c in categories.values()]
    shown = [a for a in accuracies if a > 0]
    assert len(runs) == len(shown), (len(runs), accuracies)
    heights = [int(bar[run].max()) for run in runs]
    assert all(len(run) > 20 for run in runs)  # bars, not stray pixels
    tallest = max(heights)
    for height, accuracy in zip(heights, shown, strict=True):  # to the pixel (rounding), against the tallest
        assert abs(height - tallest * accuracy / max(shown)) <= 2, (heights, shown)


def test_model_identity_keys_the_result_cache():
    """`ModelOptions.identity()` is what eval's prompt hashes and summaries are keyed by (values kept)."""
    from pathlib import Path

    from zhllama.core.evaluation.results import prompt_hash
    from zhllama.core.loading import ModelOptions

    plain = ModelOptions(model="m").validated()
    assert plain.identity() == "m||None|None"
    adapters = ModelOptions(model="m", lora=[Path("a"), Path("b")], load="4bit", dtype="bf16").validated()
    assert adapters.identity() == "m|a,b|4bit|bfloat16"
    rope = ModelOptions(model="m", rope_scaling="linear", rope_factor="2").validated()
    assert rope.identity() == "m||None|None|linear|2|None"
    assert ModelOptions(model="m", context_length=4096).validated().identity() == "m||None|None|None|None|4096"
    # placement flags are not part of it (as before: --dtype is, the device's default dtype is not)
    assert ModelOptions(model="m", device="cpu", threads=2).validated().identity() == plain.identity()
    hashes = {prompt_hash({"model": o.identity()}, [1, 2, 3]) for o in (plain, adapters, rope)}
    assert len(hashes) == 3


def test_resume_skips_done_questions(tmp_path, model):
    out = tmp_path / "r"
    run_mcq(CEval(), model, data_path("ceval"), out, McqSettings(subjects="computer_network", limit=3))
    assert len(predictions(out)) == 3
    lines_before = (out / "predictions.jsonl").read_text().count("\n")
    run_mcq(CEval(), model, data_path("ceval"), out, McqSettings(subjects="computer_network"))
    assert (out / "predictions.jsonl").read_text().count("\n") == lines_before + 5  # only the 5 new ones


def test_test_split_writes_official_submission(tmp_path, model):
    data = tmp_path / "ceval"
    shutil.copytree(data_path("ceval"), data)
    (data / "test").mkdir()
    with open(data / "val" / "computer_network_val.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(data / "test" / "computer_network_test.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "question", "A", "B", "C", "D"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in writer.fieldnames})
    summary = run_mcq(CEval(), model, data, tmp_path / "out", McqSettings(split="test", shots=5))
    submission = json.loads((tmp_path / "out" / "submission.json").read_text())
    assert list(submission) == ["computer_network"]
    assert sorted(submission["computer_network"], key=int) == [str(i) for i in range(len(rows))]
    assert set(submission["computer_network"].values()) <= set("ABCD")
    assert summary["overall"]["total"] == 0  # no gold answers in a test split


@pytest.mark.parametrize("style", ["default", "cla2"])
def test_generate_mode_records_text_and_extracted_letter(tmp_path, model, style):
    from zhllama.core.evaluation import mcq
    from zhllama.plugins.benchmarks.prompt_styles import extract_answer_cla2

    run_mcq(
        CEval(),
        model,
        data_path("ceval"),
        tmp_path / "g",
        McqSettings(mode="generate", subjects="computer_network", limit=3, max_new_tokens=6, prompt_style=style),
    )
    questions = {q.qid: q for q in CEval().load(data_path("ceval"), "val")[0]["computer_network"]}
    extract = extract_answer_cla2 if style == "cla2" else mcq.extract_answer
    records = predictions(tmp_path / "g")
    assert len(records) == 3
    for (_, qid), record in records.items():
        assert isinstance(record["generated"], str) and "scores" not in record
        assert record["prediction"] == extract(record["generated"], questions[qid].options)
        assert record["correct"] == int(record["prediction"] == questions[qid].answer)


@pytest.mark.shared_data
def test_real_ceval_val_and_cmmlu_dev(tmp_path, model):
    ceval = shared("ceval")
    questions, dev, names, categories = CEval().load(ceval, "val")
    assert len(questions) == 52 and sum(len(q) for q in questions.values()) == 1346
    assert len(set(categories.values())) == 4 and all(len(d) == 5 for d in dev.values())
    subjects = "computer_network,high_school_physics,law"
    summary = run_mcq(CEval(), model, ceval, tmp_path / "ce", McqSettings(shots=5, subjects=subjects, limit=4))
    assert summary["overall"]["total"] == 12 and len(summary["subjects"]) == 3
    cmmlu = shared("cmmlu")
    questions, _, _, categories = CMMLU().load(cmmlu, "dev")
    assert len(questions) == 67 and sum(len(q) for q in questions.values()) == 335
    assert set(categories.values()) == {"STEM", "Humanities", "Social Science", "Other", "China specific"}
    assert categories["ancient_chinese"] == "China specific"
    summary = run_mcq(
        CMMLU(),
        model,
        cmmlu,
        tmp_path / "cm",
        McqSettings(split="dev", subjects="ancient_chinese,virology", prompt_style="official"),
    )
    assert summary["overall"]["total"] == 10


def test_bad_subject_and_bad_csv(tmp_path, model):
    from zhllama.core.errors import UserError

    with pytest.raises(UserError, match="did you mean 'computer_network'"):
        run_mcq(CEval(), model, data_path("ceval"), tmp_path / "x", McqSettings(subjects="computer_netwrk"))
    data = tmp_path / "bad"
    shutil.copytree(data_path("ceval"), data)
    path = data / "val" / "computer_network_val.csv"
    path.write_text("id,question,A,B,C,D,answer\n0,q,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(UserError, match="row 1: answer 'E'"):
        run_mcq(CEval(), model, data, tmp_path / "y", McqSettings())


def test_longbench_end_to_end(tmp_path, tiny_zh_model, run_cli):
    data = tmp_path / "lb"
    data.mkdir()
    samples = {
        "multifieldqa_zh": [
            {
                "input": "首都是哪里？",
                "context": "中国的首都是北京。" * 50,
                "answers": ["北京"],
                "all_classes": None,
                "length": 450,
            }
        ],
        "passage_retrieval_zh": [
            {
                "input": "摘要",
                "context": "段落1：北京。段落2：上海。",
                "answers": ["段落2"],
                "all_classes": None,
                "length": 20,
            }
        ],
        "lsht": [
            {
                "input": "新闻：球赛",
                "context": "新闻：股票\n类别：财经",
                "answers": ["体育"],
                "all_classes": ["体育", "财经"],
                "length": 10,
            }
        ],
    }
    for task, rows in samples.items():
        (data / f"{task}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    code, out, err = run_cli(
        "--json",
        "eval",
        "longbench",
        "--model",
        tiny_zh_model,
        "--data-dir",
        data,
        "--output",
        tmp_path / "res",
        "--tasks",
        ",".join(samples),
        "--max-length",
        "64",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["tasks"]) == set(samples)
    assert set(summary["categories"]) == {"single-doc", "synthetic", "few-shot"}
    assert summary["average"] == pytest.approx(sum(summary["categories"].values()) / 3)
    records = [json.loads(x) for x in (tmp_path / "res" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(0 <= r["score"] <= 1 for r in records)
    code, _, err = run_cli(
        "eval",
        "longbench",
        "--model",
        tiny_zh_model,
        "--data-dir",
        data,
        "--output",
        tmp_path / "r2",
        "--tasks",
        "dureader",
    )
    assert code == 2 and "dureader.jsonl" in err


def test_prefix_reuse_equals_batched_and_single(tmp_path, model):
    """The engine method: prefix KV reused over a batch == full sequences batched == one at a time."""
    import torch

    tok = model.tokenizer
    prefix = tok.encode("以下是中国关于计算机网络考试的单项选择题，请选出其中的正确答案。\n\n", bos=True)
    suffixes = [
        tok.encode(t)
        for t in ("HTTP默认端口是多少？\n答案：", "IPv4\n答案：", "一个更长一些的问题，有很多字。\n答案：")
    ]
    reused = model.next_token_logits_with_prefix(prefix, suffixes)
    batched = model.next_token_logits([prefix + s for s in suffixes])
    single = torch.cat([model.next_token_logits([prefix + s]) for s in suffixes])
    assert reused.shape == batched.shape == single.shape
    torch.testing.assert_close(reused, single, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    again = model.next_token_logits_with_prefix(prefix, suffixes[:1])  # the cached prefix is reused as is
    torch.testing.assert_close(again[0], single[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("style, template", [("default", None), ("cla2", None), ("cla2", "llama2-zh")])
def test_prefix_reuse_predictions_identical_to_no_reuse(tmp_path, model, style, template):
    data = data_path("ceval")
    runs = {}
    for name, kwargs in {
        "reuse": {"prefix_reuse": True},
        "plain": {"prefix_reuse": False},
        "single": {"prefix_reuse": False, "batch_size": "1"},
    }.items():
        settings = McqSettings(shots=5, prompt_style=style, template=template, **kwargs)
        run_mcq(CEval(), model, data, tmp_path / name, settings)
        runs[name] = predictions(tmp_path / name)
    assert len(runs["reuse"]) == 24
    for key, record in runs["single"].items():
        assert runs["reuse"][key]["prediction"] == runs["plain"][key]["prediction"] == record["prediction"]
        for letter in "ABCD":
            assert runs["reuse"][key]["scores"][letter] == pytest.approx(record["scores"][letter], abs=1e-3)


def test_prefix_plan_groups_each_subject_behind_its_shared_prefix():
    from zhllama.core.evaluation.runner import common_prefix, logits_plan

    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == [1, 2]
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]  # every suffix keeps one token
    from zhllama.core.evaluation.mcq import Question

    def q(subject, i):
        return Question(subject, str(i), "q", ("a", "b", "c", "d"), "A")

    long = list(range(100, 120))
    todo = [(q("x", i), long + [i, i], "h") for i in range(3)] + [(q("y", i), [1, i], "h") for i in range(2)]
    plan = list(logits_plan(todo, McqSettings(batch_size="2")))
    assert [(len(p), [it[0].subject for it in b]) for p, b in plan] == [(20, ["x", "x"]), (20, ["x"]), (0, ["y", "y"])]


def test_tiny_model_predictions_are_pinned(tmp_path, model):
    """Regression pin: the seeded tiny model's C-Eval letter scores (bundled sample, 2-shot and cla2 5-shot)."""
    for name, settings in {"default": McqSettings(shots=2), "cla2": McqSettings(shots=5, prompt_style="cla2")}.items():
        run_mcq(CEval(), model, data_path("ceval"), tmp_path / name, settings)
        records = predictions(tmp_path / name)
        first = [records[("computer_network", str(i))] for i in range(3)]
        got = [round(r["scores"][letter], 4) for r in first for letter in "ABCD"]
        assert got == pytest.approx(PINNED[name], abs=2e-3)
        assert [r["prediction"] for r in first] == [PINNED_LETTERS[name]] * 3


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_longbench_e_buckets_and_rope_extended_max_length(tmp_path, tiny_zh_model, run_cli):
    data = tmp_path / "lbe"
    data.mkdir()
    code_line = "def add(a, b):\n    return a + b\n" * 3
    rows = [
        {
            "input": "",
            "context": code_line,
            "answers": ["return a + b"],
            "all_classes": None,
            "length": n,
            "_id": str(n),
        }
        for n in (100, 5000, 9000)
    ]
    write_jsonl(data / "lcc_e.jsonl", rows)
    base = ("--json", "eval", "longbench", "--model", tiny_zh_model, "--data-dir", data, "--tasks", "lcc", "--e")
    code, out, err = run_cli(*base, "--output", tmp_path / "e", "--max-length", "64")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["benchmark"] == "longbench-e"
    buckets = summary["tasks"]["lcc"]["buckets"]
    records = {
        r["id"]: r["score"] for r in map(json.loads, (tmp_path / "e" / "predictions.jsonl").read_text().splitlines())
    }
    assert buckets == pytest.approx(
        {"0-4k": 100 * records["100"], "4-8k": 100 * records["5000"], "8k+": 100 * records["9000"]}
    )
    assert summary["buckets"] == pytest.approx(buckets)
    # the tiny model has 2048 positions: 3000 needs the rope flags (linear x2 -> 4096)
    code, _, err = run_cli(*base, "--output", tmp_path / "r1", "--max-length", "3000", "--limit", "1")
    assert code == 2 and "longer than the model's context (2048 tokens)" in err
    extended = ("--rope-scaling", "linear", "--rope-factor", "2", "--max-length", "3000", "--limit", "1")
    code, out, err = run_cli(*base, "--output", tmp_path / "r2", *extended)
    assert code == 0, err
    assert json.loads(out)["settings"]["max_length"] == 3000


def test_longbench_official_configs_add_english_tasks(tmp_path):
    from zhllama.plugins.benchmarks.longbench import LongBench

    data = tmp_path / "lb"
    data.mkdir()
    (data / "dataset2prompt.json").write_text(json.dumps({"trec": "{context}\n{input}", "lsht": "X{input}"}))
    (data / "dataset2maxlen.json").write_text(json.dumps({"trec": 64, "lsht": 16}))
    configs = LongBench().tasks(data)
    assert configs["trec"] == {"prompt": "{context}\n{input}", "max_new_tokens": 64, "category": "few-shot"}
    assert configs["lsht"]["prompt"] == "X{input}" and configs["lsht"]["max_new_tokens"] == 16
    assert "dureader" in configs  # shipped ones stay
