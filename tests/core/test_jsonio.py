"""One JSON reader (`core.paths.read_json` / `parse_json_line`), one wording for every failure, and
every former private reader's caller now giving that wording (units and the CLI)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from zhllama.core.errors import UserError
from zhllama.core.paths import parse_json_line, read_json


def _raises(call, message: str) -> None:
    with pytest.raises(UserError) as info:
        call()
    assert str(info.value) == message


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


BROKEN = '{"a": 1,\n  "b": }'  # line 2, column 8: Expecting value


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (BROKEN, "not valid JSON (line 2, column 8: Expecting value)"),
        ("", "not valid JSON (line 1, column 1: Expecting value)"),
        ('{"a": 1} 2', "not valid JSON (line 1, column 10: Extra data)"),
        (b'{"a": "caf\xe9"}', "not UTF-8 text (byte 10: invalid continuation byte)"),
        ("[1, 2]", "expected a JSON object, got an array"),
        ('"text"', "expected a JSON object, got a string"),
        ("3.5", "expected a JSON object, got a number"),
        ("null", "expected a JSON object, got null"),
        ("true", "expected a JSON object, got a boolean"),
    ],
)
def test_read_json_failures_have_one_wording(tmp_path, content, message):
    path = _write(tmp_path / "f.json", content)
    _raises(lambda: read_json(path), f"{path}: {message}")


def test_read_json_missing_folder_and_kinds(tmp_path):
    _raises(lambda: read_json(tmp_path / "none.json"), f"{tmp_path / 'none.json'}: no such file")
    _raises(lambda: read_json(tmp_path), f"{tmp_path}: is a folder, expected a text file")
    assert read_json(tmp_path / "none.json", optional=True) == {}
    assert read_json(tmp_path / "none.json", expect=list, optional=True) == []
    assert read_json(tmp_path / "none.json", expect=None, optional=True) is None
    path = _write(tmp_path / "l.json", '[1, {"a": "中文"}]')
    assert read_json(path, expect=list) == [1, {"a": "中文"}]
    assert read_json(path, expect=None) == [1, {"a": "中文"}]
    _raises(lambda: read_json(path, expect=dict, optional=True), f"{path}: expected a JSON object, got an array")
    obj = _write(tmp_path / "o.json", '{"k": [1]}')
    assert read_json(obj) == {"k": [1]}
    _raises(lambda: read_json(obj, expect=list), f"{obj}: expected an array, got a JSON object")


def test_unreadable_file_is_a_user_error(tmp_path, monkeypatch):
    path = _write(tmp_path / "f.json", "{}")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    _raises(lambda: read_json(path), f"{path}: cannot read (Permission denied)")


def test_parse_json_line_wording():
    assert parse_json_line('{"a": 1}', "p.jsonl:3") == {"a": 1}
    _raises(lambda: parse_json_line('{"a": ', "p.jsonl:3"), "p.jsonl:3: not valid JSON (column 7: Expecting value)")
    _raises(lambda: parse_json_line("[1]", "p.jsonl:3"), "p.jsonl:3: expected a JSON object, got an array")
    assert parse_json_line("[1]", "p.jsonl:3", expect=None) == [1]


# ---- every former reader's caller ---------------------------------------------------------------
def _model_folder(tmp_path: Path, config: str) -> Path:
    folder = tmp_path / "model"
    _write(folder / "config.json", config)
    return folder


def test_checkpoint_readers(tmp_path):
    from zhllama.core.checkpoint import rope_config, shards, validate

    folder = _model_folder(tmp_path, BROKEN)
    expected = f"{folder / 'config.json'}: not valid JSON (line 2, column 8: Expecting value)"
    _raises(lambda: shards.read_config(folder), expected)  # was shards.read_json: "malformed config.json (...)"
    _raises(lambda: validate.validate_model_dir(folder), expected.replace(str(folder), str(folder.resolve())))
    (folder / "config.json").write_text("[]")
    _raises(lambda: shards.read_config(folder), f"{folder / 'config.json'}: expected a JSON object, got an array")
    assert rope_config.read_overrides(folder) == {}  # no zhllama_overrides.json
    overrides = _write(folder / rope_config.OVERRIDES_FILE, "{")
    _raises(
        lambda: rope_config.read_overrides(folder),
        f"{overrides}: not valid JSON (line 1, column 2: Expecting property name enclosed in double quotes)",
    )


def test_checkpoint_state_reader(tmp_path):
    from zhllama.core.checkpoint import validate

    state = _write(tmp_path / "checkpoint-2" / "trainer_state.json", '{"global_step": ')
    _raises(
        lambda: validate.validate_checkpoint_dir(state.parent),
        f"{state.resolve()}: not valid JSON (line 1, column 17: Expecting value)",
    )


def test_tokenizer_readers(tmp_path):
    from zhllama.core import bpe
    from zhllama.core.quantize import gguf_vocab

    tok = _write(tmp_path / "tok" / "tokenizer.json", "[1]")
    _raises(lambda: bpe.ByteBpe.load(tok), f"{tok}: expected a JSON object, got an array")  # was "not a tokenizer.json"
    tok.write_text('{"model": ')
    _raises(lambda: bpe.ByteBpe.load(tok.parent), f"{tok}: not valid JSON (line 1, column 11: Expecting value)")
    config = _write(tmp_path / "tok" / "tokenizer_config.json", b"\xff{}")
    _raises(
        lambda: gguf_vocab.check_tokenizer_files(tok.parent),
        f"{config}: not UTF-8 text (byte 0: invalid start byte)",
    )


def test_plugin_readers(tmp_path):
    from zhllama.plugins.benchmarks.exams import read_mapping
    from zhllama.plugins.benchmarks.longbench import LongBench
    from zhllama.plugins.engines.vllm_engine import lora_rank

    adapter = _write(tmp_path / "adapter" / "adapter_config.json", "{'r': 8}").parent
    _raises(
        lambda: lora_rank(adapter),  # was "cannot read: Expecting property name ..."
        f"{adapter / 'adapter_config.json'}: not valid JSON "
        "(line 1, column 2: Expecting property name enclosed in double quotes)",
    )
    data = tmp_path / "longbench"
    prompts = _write(data / "dataset2prompt.json", '{"samsum": "{context}"')
    _write(data / "dataset2maxlen.json", json.dumps({"samsum": 128}))
    _raises(
        lambda: LongBench().tasks(data),  # was "malformed JSON (Expecting ',' delimiter, line 1)"
        f"{prompts}: not valid JSON (line 1, column 23: Expecting ',' delimiter)",
    )
    mapping = _write(tmp_path / "subject_mapping.json", '["a"]')
    _raises(
        lambda: read_mapping(mapping, "ceval_subjects.json", dict), f"{mapping}: expected a JSON object, got an array"
    )


def test_cli_names_the_file_with_the_one_wording(tmp_path, run_cli):
    folder = _model_folder(tmp_path, BROKEN)
    code, out, err = run_cli("quantize", "gguf", "-m", folder, "--type", "Q8_0", "-o", tmp_path / "m.gguf")
    expected = f"{(folder / 'config.json').resolve()}: not valid JSON (line 2, column 8: Expecting value)"
    assert (code, out, err) == (2, "", f"zhllama: error: {expected}\n")
    assert not (tmp_path / "m.gguf").exists()
    prompts = _write(tmp_path / "p.jsonl", '{"prompt": "你好"}\n{"prompt": \n')
    code, out, err = run_cli("predict", "-m", folder, "-i", prompts, "-o", tmp_path / "o.jsonl")
    assert (code, out) == (2, "")
    assert re.fullmatch(rf"zhllama: error: {re.escape(str(prompts))}:2: not valid JSON \(column 12: .+\)\n", err)
    assert not (tmp_path / "o.jsonl").exists()
