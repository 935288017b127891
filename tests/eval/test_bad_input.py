"""Bad eval input: one line `zhllama: error: ...`, exit 2, nothing written, inputs unchanged."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from zhllama.core.assets import data_path


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def ceval_copy(tmp_path):
    data = tmp_path / "ceval"
    shutil.copytree(data_path("ceval"), data)
    return data


def check_refused(run_cli, args, message, out=None, inputs=()):
    before = [digest(p) if p.is_dir() else p.read_bytes() for p in inputs]
    code, stdout, err = run_cli(*args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("zhllama: error:") and message in err, err
    if out is not None:
        assert not out.exists() or out.is_file() or not any(out.iterdir())
    assert [digest(p) if p.is_dir() else p.read_bytes() for p in inputs] == before


def exam(model, data, out, *extra):
    return ("eval", "ceval", "--model", model, "--data-dir", data, "--output", out, *extra)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--limit", "-1"), "--limit: -1 must be at least 1"),
        (("--shots", "6"), "--shots: 6"),
        (("--batch-size", "0"), "--batch-size: 0"),
        (("--mode", "sample"), "--mode"),
        (("--prompt-style", "cla2", "--template", "alpaca"), "--template"),
        (("--max-new-tokens", "0"), "--max-new-tokens"),
    ],
)
def test_bad_exam_options(tmp_path, tiny_zh_model, run_cli, ceval_copy, extra, message):
    out = tmp_path / "res"
    check_refused(run_cli, exam(tiny_zh_model, ceval_copy, out, *extra), message, out, [ceval_copy])


def test_header_only_csv_is_an_error(tmp_path, tiny_zh_model, run_cli, ceval_copy):
    path = ceval_copy / "val" / "computer_network_val.csv"
    path.write_text("id,question,A,B,C,D,answer\n", encoding="utf-8")
    out = tmp_path / "res"
    check_refused(run_cli, exam(tiny_zh_model, ceval_copy, out), "computer_network_val.csv: no questions", out)


def test_non_utf8_csv(tmp_path, tiny_zh_model, run_cli, ceval_copy):
    path = ceval_copy / "val" / "computer_network_val.csv"
    path.write_bytes("id,question,A,B,C,D,answer\n0,问题,a,b,c,d,A\n".encode("gbk"))
    check_refused(run_cli, exam(tiny_zh_model, ceval_copy, tmp_path / "r"), "computer_network_val.csv", tmp_path / "r")


def test_output_that_is_a_file_or_inside_the_data(tmp_path, tiny_zh_model, run_cli, ceval_copy):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me", encoding="utf-8")
    check_refused(run_cli, exam(tiny_zh_model, ceval_copy, existing), "existing file", inputs=[existing])
    inside = ceval_copy / "results"
    check_refused(run_cli, exam(tiny_zh_model, ceval_copy, inside), "must not be, contain or sit inside", inside)


def test_symlinked_predictions_log_is_refused(tmp_path, tiny_zh_model, run_cli, ceval_copy):
    out = tmp_path / "res"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n", encoding="utf-8")
    os.symlink(victim, out / "predictions.jsonl")
    check_refused(run_cli, exam(tiny_zh_model, ceval_copy, out), "refusing to append", inputs=[victim])


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--batch-size", "0"), "--batch-size: 0"),
        (("--context", "8", "--stride", "16"), "--stride: 16 is larger than --context 8"),
        (("--context", "1"), "--context: 1"),
        (("--context", "999999"), "longer than the model's context"),
        (("--backend", "llamacpp"), "is not a .gguf"),
    ],
)
def test_bad_ppl_options(tmp_path, tiny_zh_model, run_cli, extra, message):
    text = tmp_path / "t.txt"
    text.write_text("中国的首都是北京。", encoding="utf-8")
    check_refused(run_cli, ("eval", "ppl", "--model", tiny_zh_model, "--data", text, *extra), message)


def test_ppl_non_utf8_text_and_unused_tokenizer(tmp_path, tiny_zh_model, run_cli):
    text = tmp_path / "t.txt"
    text.write_bytes("中国的首都是北京。".encode("gbk"))
    check_refused(run_cli, ("eval", "ppl", "--model", tiny_zh_model, "--data", text), "not UTF-8")
    text.write_text("中国", encoding="utf-8")
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF")
    args = ("eval", "ppl", "--model", fake, "--data", text, "--backend", "llamacpp", "--tokenizer", tiny_zh_model)
    check_refused(run_cli, args, "--tokenizer")


def test_longbench_bad_inputs(tmp_path, tiny_zh_model, run_cli):
    data = tmp_path / "lb"
    data.mkdir()
    (data / "lsht.jsonl").write_bytes('{"input": "球赛", "context": "", "answers": ["体育"]}\n'.encode("utf-16"))
    base = ("eval", "longbench", "--model", tiny_zh_model, "--data-dir", data, "--output", tmp_path / "o")
    check_refused(run_cli, (*base, "--tasks", "lsht"), "not UTF-8", tmp_path / "o")
    check_refused(run_cli, (*base, "--tasks", "lsht", "--limit", "-1"), "--limit")
    (data / "lsht.jsonl").write_text('{"input": "球赛", "context": "", "answers": ["体育"]}\n', encoding="utf-8")
    check_refused(run_cli, (*base, "--tasks", "lsht", "--max-length", "100000"), "longer than the model's context")
    check_refused(run_cli, (*base, "--tasks", "nope"), "nope")
