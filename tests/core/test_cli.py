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
    code, out, err = run_cli("vocab", "train", "--vocab-size", "nope")
    assert (code, out) == (2, "")
    assert err.strip() == (
        "zhllama: error: Invalid value for '--vocab-size': Input should be a valid integer, unable to parse string "
        "as an integer "
        "(see 'zhllama vocab train --help')"
    )


HEAVY = ("torch", "transformers", "peft", "datasets", "trl", "gradio", "fastapi", "llama_cpp", "deepspeed")


def test_building_the_cli_and_every_help_imports_no_heavy_library():
    """`zhllama --help`, `--version` and every `CMD --help` start without torch & co (start-up time)."""
    script = f"""
import sys
from zhllama.cli.app import build_cli, run
cli = build_cli()
paths = []
def walk(cmd, prefix):
    subs = getattr(cmd, "commands", None)
    if isinstance(subs, dict):
        for name, sub in subs.items():
            walk(sub, [*prefix, name])
    else:
        paths.append(prefix)
walk(cli, [])
codes = [run([*p, "--help"]) for p in paths] + [run(["--version"]), run(["--help"])]
print(len(paths), set(codes), sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    count, codes, heavy = done.stdout.strip().splitlines()[-1].split(" ", 2)
    assert int(count) >= 20 and codes == "{0}" and heavy == "[]"


INFERENCE_COMMANDS = (
    ("chat",),
    ("serve",),
    ("predict",),
    ("webui",),
    ("eval", "ceval"),
    ("eval", "cmmlu"),
    ("eval", "longbench"),
    ("eval", "ppl"),
)


def test_every_inference_command_has_the_same_model_flags():
    """One `ModelOptions` schema: same flags, spellings and help on chat, serve, predict, webui, every eval."""
    from zhllama.cli.app import build_cli
    from zhllama.core.loading.options import ModelOptions
    from zhllama.core.schema import field_specs

    expected = {spec.flags: spec.help for spec in field_specs(ModelOptions)}
    cli = build_cli()
    for path in INFERENCE_COMMANDS:
        command = cli
        for name in path:
            command = command.commands[name]
        found = {tuple(p.opts): p.help for p in command.params if tuple(p.opts) in expected}
        assert found == expected, " ".join(path)


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
