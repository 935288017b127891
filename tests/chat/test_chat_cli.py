"""`zhllama chat`: one-shot, piped stdin, --json records, the REPL driven with scripted input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from zhllama.cli.commands.chat import repl
from zhllama.core.engine import GenerationParams
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import Message, get_template

GREEDY = ["--greedy", "--max-new-tokens", "10"]


def _expected(model, template: str, user: str, n: int = 10, system=None) -> str:
    runtime = ChatRuntime(model, get_template(template), "m", system=system)
    return runtime.reply(
        runtime.prompt_ids([Message("user", user)]), GenerationParams(max_new_tokens=n, greedy=True)
    ).run()


def test_prompt_prints_only_the_answer(run_cli, tiny_zh_model, zh_model):
    code, out, _ = run_cli("chat", "-m", tiny_zh_model, *GREEDY, "--prompt", "你好")
    assert code == 0 and out == _expected(zh_model, "llama2-zh", "你好") + "\n"
    code, out, _ = run_cli("chat", "-m", tiny_zh_model, *GREEDY, "--template", "none", "--prompt", "你好")
    assert code == 0 and out == _expected(zh_model, "none", "你好") + "\n"
    code, out2, _ = run_cli("chat", "-m", tiny_zh_model, *GREEDY, "--system-prompt", "你是诗人。", "--prompt", "你好")
    assert out2 == _expected(zh_model, "llama2-zh", "你好", system="你是诗人。") + "\n" != out


def test_json_record(run_cli, tiny_zh_model, zh_model):
    code, out, _ = run_cli("--json", "chat", "-m", tiny_zh_model, *GREEDY, "--prompt", "你好")
    record = json.loads(out)
    assert code == 0 and record["answer"] == _expected(zh_model, "llama2-zh", "你好")
    assert record["usage"]["completion_tokens"] == 10 and record["finish_reason"] == "length"


@pytest.mark.slow
def test_piped_stdin_one_answer_per_line(tiny_zh_model, zh_model):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    cmd = [sys.executable, "-m", "zhllama", "--json", "chat", "-m", str(tiny_zh_model), *GREEDY]
    proc = subprocess.run(cmd, input="你好\n\n北京\n", capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["你好", "北京"]
    assert [r["answer"] for r in records] == [_expected(zh_model, "llama2-zh", q) for q in ("你好", "北京")]


def test_bad_flags_are_user_errors(run_cli, tiny_zh_model, tmp_path):
    code, _, err = run_cli("chat", "-m", tmp_path / "missing", "--prompt", "x")
    assert code == 2 and "missing: no such model" in err
    code, _, err = run_cli("chat", "-m", tiny_zh_model, "--template", "alpacca", "--prompt", "x")
    assert code == 2 and "did you mean 'alpaca'" in err
    code, _, err = run_cli(
        "chat", "-m", tiny_zh_model, "--rope-scaling", "linear", "--rope-factor", "auto", "--prompt", "x"
    )
    assert code == 2 and "--rope-factor" in err
    code, _, err = run_cli(
        "chat", "-m", tiny_zh_model, "--draft-model", tiny_zh_model, "--draft-k", "0", "--prompt", "x"
    )
    assert code == 2 and "--draft-k" in err
    if importlib.util.find_spec("vllm") is None:
        code, _, err = run_cli("chat", "-m", tiny_zh_model, "--engine", "vllm", "--prompt", "x")
        assert code == 2 and "needs vllm" in err and "zhllama[vllm]" in err
    code, _, err = run_cli("chat", "-m", tiny_zh_model, "--rope-factor", "2", "--prompt", "x")
    assert code == 2 and "--rope-scaling" in err


class Script:
    """Feeds REPL lines; raises KeyboardInterrupt inside the answer of the line marked with '!'."""

    def __init__(self, lines):
        self.lines = list(lines)
        self.out: list[str] = []
        self.interrupt_next = False

    def read(self, _prompt: str) -> str:
        if not self.lines:
            raise EOFError
        line = self.lines.pop(0)
        if line == "^C":
            raise KeyboardInterrupt
        self.interrupt_next = line.endswith("!")
        self.out.append("|")
        return line

    def write(self, text: str) -> None:
        if self.interrupt_next and text.strip():
            self.interrupt_next = False
            self.out.append(text)
            raise KeyboardInterrupt
        self.out.append(text)

    def answers(self) -> list[str]:
        return [a.strip("\n") for a in "".join(self.out).split("|")[1:] if a.strip("\n")]


@pytest.fixture
def runtime(zh_model):
    return ChatRuntime(zh_model, get_template("llama2-zh"), "m")


def test_repl_keeps_history_and_commands(runtime, zh_model):
    params = GenerationParams(max_new_tokens=6, greedy=True)
    script = Script(["你好", "北京", "/reset", "北京", "/system 你是诗人。", "北京", "^C", "/exit", "never read"])
    repl(runtime, params, script.read, script.write)
    first, second, after_reset, with_system = script.answers()
    r = ChatRuntime(zh_model, get_template("llama2-zh"), "m")
    ids_turn2 = r.prompt_ids([Message("user", "你好"), Message("assistant", first), Message("user", "北京")])
    assert second == r.reply(ids_turn2, params).run()
    assert after_reset == _expected(zh_model, "llama2-zh", "北京", n=6)
    assert with_system == _expected(zh_model, "llama2-zh", "北京", n=6, system="你是诗人。")
    assert script.lines == ["never read"]


def test_repl_ctrl_c_stops_only_the_answer(runtime):
    params = GenerationParams(max_new_tokens=20, greedy=True)
    script = Script(["你好!", "北京"])
    repl(runtime, params, script.read, script.write)
    cut, full = script.answers()
    assert 0 < len(cut) < 10 and len(full) > len(cut)  # the program went on to the next question


def test_repl_unknown_command_lists_commands_and_length_note(runtime, capsys):
    params = GenerationParams(max_new_tokens=4, greedy=True)
    script = Script(["/rest", "//etc", "你好"])
    repl(runtime, params, script.read, script.write)
    err = capsys.readouterr().err
    assert "unknown command /rest" in err and "/reset" in err and "/system TEXT" in err and "/exit" in err
    literal, answer = script.answers()
    assert literal == _expected(runtime.model, "llama2-zh", "/etc", n=4)  # '//' sends a literal '/'
    turn2 = runtime.prompt_ids([Message("user", "/etc"), Message("assistant", literal), Message("user", "你好")])
    assert answer == runtime.reply(turn2, params).run()
    assert err.count("(stopped at --max-new-tokens)") == 2
