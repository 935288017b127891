"""A third-party benchmark plugin gets its own `zhllama eval NAME` command (no `kind` dispatch)."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
import typer
from typer.testing import CliRunner

from zhllama.core import registry
from zhllama.core.plugin_api import BenchmarkPlugin


def echo_command(word: str = typer.Option("hi", "--word")) -> None:
    """Say a word."""
    print(f"fake benchmark says {word}")


echo_command.examples = ("zhllama eval fake --word yo",)


class FakeBenchmark(BenchmarkPlugin):
    name = "fake"
    description = "a third-party benchmark"

    @classmethod
    def typer_command(cls):
        return echo_command


class NotABenchmark:
    name = "broken"


def test_third_party_plugin_brings_its_command(monkeypatch):
    from zhllama.cli.commands.eval import benchmark_command

    real = registry._entry_points

    def with_fakes(kind):
        found = dict(real(kind))
        if kind == "benchmarks":
            group = "zhllama.benchmarks"
            found["fake"] = EntryPoint("fake", f"{__name__}:FakeBenchmark", group)
            found["broken"] = EntryPoint("broken", f"{__name__}:NotABenchmark", group)
        return found

    monkeypatch.setattr(registry, "_entry_points", with_fakes)
    command, examples = benchmark_command("fake")
    assert command is echo_command and examples == ("zhllama eval fake --word yo",)
    app = typer.Typer()
    app.command("fake")(command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["fake", "--word", "yo"])
    assert result.exit_code == 0 and "fake benchmark says yo" in result.output
    broken, _ = benchmark_command("broken")  # a broken plugin never breaks the CLI: its command explains
    try:
        broken()
    except Exception as exc:
        assert "not a subclass of BenchmarkPlugin" in str(exc)
    else:
        raise AssertionError("the broken plugin's command must refuse")


def test_building_the_eval_commands_leaves_torch_out():
    import subprocess
    import sys

    code = (
        "import sys, typer; from zhllama.cli.commands import eval as ev; ev.register(typer.Typer()); "
        "print(' '.join(sorted(c.name for c in ev.app.registered_commands)), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {"ceval", "cmmlu", "longbench", "ppl"} <= set(out[:-1]) and out[-1] == "False"


def test_a_settings_plugin_gets_the_generic_eval_command(monkeypatch, wide_help):
    """A plugin that declares `settings_class` (here an `Exam` subclass) is given `zhllama eval NAME`
    by the builder: its settings' flags, the model flags, --data-dir and --output; no CLI import in it."""
    from zhllama.cli.commands.eval import benchmark_command
    from zhllama.plugins.benchmarks.ceval import CEval

    class MyExam(CEval):
        name = "myexam"
        description = "a third-party exam in C-Eval's layout"
        examples = ("zhllama eval myexam --model m --data-dir d --output o",)

    real = registry._entry_points

    def with_fake(kind):
        found = dict(real(kind))
        if kind == "benchmarks":
            found["myexam"] = EntryPoint("myexam", f"{__name__}:MyExam", "zhllama.benchmarks")
        return found

    monkeypatch.setattr(registry, "_entry_points", with_fake)
    monkeypatch.setitem(globals(), "MyExam", MyExam)
    command, examples = benchmark_command("myexam")
    assert examples == MyExam.examples and command.__doc__.startswith("a third-party exam")
    app = typer.Typer()
    app.command("myexam")(command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(
        app,
        ["myexam", "--help"],
    )
    assert result.exit_code == 0
    for flag in ("--model", "--shots", "--prompt-style", "--mode", "--plot", "--data-dir", "--output"):
        assert flag in result.output


@pytest.mark.parametrize(
    "name, flags",
    [("ceval", ("--shots", "--prompt-style")), ("cmmlu", ("--shots", "--mode")), ("longbench", ("--tasks", "--e"))],
)
def test_builtin_benchmarks_get_their_generic_command(name, flags, wide_help):
    """Never the 'unusable plugin' fallback: each built-in command has its settings' flags."""
    from zhllama.cli.commands.eval import benchmark_command

    command, examples = benchmark_command(name)
    assert examples and all(e.startswith(f"zhllama eval {name}") or e.startswith(f"zhllama {name}") for e in examples)
    app = typer.Typer()
    app.command(name)(command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(
        app,
        [name, "--help"],
    )
    assert result.exit_code == 0
    for flag in (*flags, "--model", "--data-dir", "--output"):
        assert flag in result.output
