"""CLI conventions shared by every command: version, errors, --json, --config, python -m."""

from __future__ import annotations

import json
import subprocess
import sys

from zhllama import __version__


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip() == f"zhllama {__version__}"


def test_python_dash_m_runs_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "zhllama", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"zhllama {__version__}"


def test_help_lists_commands_and_examples(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in ("vocab", "plugins", "tiny-model"):
        assert command in out
    code, out, _ = run_cli("vocab", "merge", "--help")
    assert code == 0
    assert "Examples" in out and "zhllama vocab merge --base" in out


def test_user_error_is_one_line_exit_2_without_traceback(run_cli, tmp_path):
    code, out, err = run_cli("vocab", "stats", "--tokenizer", tmp_path / "missing", "--text", tmp_path / "t.txt")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("zhllama: error: ")
    assert "Traceback" not in err


def test_debug_shows_traceback(run_cli, tmp_path):
    code, _, err = run_cli("--debug", "vocab", "stats", "--tokenizer", tmp_path / "x", "--text", tmp_path / "t.txt")
    assert code == 2
    assert "Traceback" in err


def test_usage_error_exit_2(run_cli):
    code, _, err = run_cli("vocab", "train", "--vocab-size", "nope")
    assert code == 2
    assert "Invalid value" in err or "nope" in err


def test_config_file_supplies_options_and_flags_override(run_cli, tmp_path, base_tokenizer):
    text = tmp_path / "t.txt"
    text.write_text("hello world\nthe quick brown fox\n", encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(f"tokenizer: [{base_tokenizer}]\ntext: {text}\n", encoding="utf-8")
    code, out, err = run_cli("--json", "--config", config, "vocab", "stats")
    assert code == 0, err
    result = json.loads(out)
    assert result["text"] == str(text)
    other = tmp_path / "u.txt"
    other.write_text("a b\n", encoding="utf-8")
    code, out, err = run_cli("--json", "--config", config, "vocab", "stats", "--text", other)
    assert code == 0, err
    assert json.loads(out)["text"] == str(other)


def test_config_unknown_key_is_an_error_naming_file_and_key(run_cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("vocab-sise: 10\n", encoding="utf-8")
    code, _, err = run_cli("--config", config, "vocab", "stats", "--tokenizer", "x", "--text", "y")
    assert code == 2
    assert str(config) in err and "vocab-sise" in err


def test_config_invalid_yaml(run_cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("a: [1, 2\n", encoding="utf-8")
    code, _, err = run_cli("--config", config, "plugins")
    assert code == 2
    assert "invalid YAML" in err


def test_json_output_is_machine_readable(run_cli):
    code, out, _ = run_cli("--json", "plugins")
    assert code == 0
    data = json.loads(out)
    names = {(p["group"], p["name"]) for p in data["plugins"]}
    assert ("zhllama.templates", "llama2-zh") in names
