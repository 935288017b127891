"""Benchmarks end to end on a tiny model: files, counts, batching equality, resume, submission, LongBench."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tests.conftest import shared
from zhllama.core.assets import data_path
from zhllama.core.engine import LoadOptions, open_model
from zhllama.core.evaluation.runner import McqSettings, run_mcq
from zhllama.plugins.benchmarks.ceval import CEval
from zhllama.plugins.benchmarks.cmmlu import CMMLU


@pytest.fixture(scope="module")
def model(tiny_zh_model):
    loaded = open_model(tiny_zh_model, None, LoadOptions())
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
    assert (out / "categories.png").stat().st_size > 0
    record = next(iter(predictions(out).values()))
    assert set(record) >= {"prompt_hash", "scores", "prediction", "gold", "correct"}
    # the top-level alias is the same command
    code, stdout2, err = run_cli(
        "--json", "ceval", "--model", tiny_zh_model, "--data-dir", data_path("ceval"), "--output", out, "--shots", "1"
    )
    assert code == 0, err
    assert json.loads(stdout2)["overall"] == summary["overall"]
    assert "resuming: 24 of 24" in err


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


def test_generate_mode_records_text_and_extracted_letter(tmp_path, model):
    run_mcq(
        CEval(),
        model,
        data_path("ceval"),
        tmp_path / "g",
        McqSettings(mode="generate", subjects="computer_network", limit=2, max_new_tokens=4),
    )
    for record in predictions(tmp_path / "g").values():
        assert "generated" in record and record["prediction"] in (None, "A", "B", "C", "D")


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
