"""Third-party plugins of every kind, installed as a dist-info on sys.path, listed and usable end to end.

The fake distribution below is written the way the README's plugin-authoring section says: one
class per kind subclassing `zhllama.core.plugin_api` (or `zhllama.core.templates.Template`), a
quantizer `Options` dataclass whose fields become that command's flags, a benchmark bringing its
own command, engines declaring what they open (`accepts`, `priority`) and `load`.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from zhllama.core import registry
from zhllama.core.errors import MissingDependencyError, UserError

PLUGIN_MODULE = '''
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from zhllama.core import console
from zhllama.core.plugin_api import BenchmarkPlugin, EnginePlugin, QuantizerPlugin
from zhllama.core.schema import option
from zhllama.core.templates import BOS, Message, Segment, Template


class Shout(Template):
    name = "shout"
    description = "user turns in capitals (test plugin)"

    def segments(self, messages, system=None, add_generation_prompt=False):
        _system, turns = self.split_turns(messages)
        segs = [BOS]
        for user, answer in turns:
            segs.append(Segment(f"{user.upper()}! "))
            if answer is not None:
                segs.append(Segment(answer, train=True))
        return segs


@dataclass
class CopyOptions:
    suffix: str = option(".bak", "Suffix of every copied file.")
    repeat: int = option(1, "Copies of each file.")


class CopyQuantizer(QuantizerPlugin):
    name = "copy"
    description = "copies the weight files (test plugin)"
    Options = CopyOptions

    def validate(self, model, options):
        if options.repeat < 1:
            from zhllama.core.errors import UserError
            raise UserError(f"--repeat: must be at least 1, got {options.repeat}")

    def quantize(self, model, output, options):
        for f in sorted(model.glob("*.safetensors")):
            for i in range(options.repeat):
                (output / f"{f.name}.{i}{options.suffix}").write_bytes(f.read_bytes())


class Delegate(EnginePlugin):
    name = "delegate"
    description = "a .delegate file naming an HF folder, loaded by transformers (test plugin)"

    @classmethod
    def accepts(cls, path):
        return Path(path).suffix == ".delegate"

    @classmethod
    def load(cls, path, options):
        from dataclasses import replace
        from zhllama.plugins.engines.transformers_engine import TransformersEngine
        target = Path(path).read_text().strip()
        return TransformersEngine.load(Path(target), replace(options, model=target))


class Marked(EnginePlugin):
    name = "marked"
    description = "HF folders holding a fake.marker file: declared above transformers (test plugin)"
    priority = 50

    @classmethod
    def accepts(cls, path):
        return (Path(path) / "fake.marker").is_file()

    @classmethod
    def load(cls, path, options):
        raise NotImplementedError


class Flaky(EnginePlugin):
    name = "flaky"
    description = "an engine whose check itself fails, asked first (test plugin)"
    priority = 100

    @classmethod
    def accepts(cls, path):
        raise RuntimeError("flaky check")

    @classmethod
    def load(cls, path, options):
        raise NotImplementedError


class CountChars(BenchmarkPlugin):
    name = "count-chars"
    description = "counts characters (test plugin)"

    @classmethod
    def typer_command(cls):
        def command(text: Annotated[str, typer.Option("--text", help="Text to count.")]) -> None:
            """Count characters."""
            console.emit({"chars": len(text)})

        command.examples = ("zhllama eval count-chars --text 你好",)
        return command


class NeedsMissing(CopyQuantizer):
    name = "needs-missing"
    description = "needs a package that is not installed"
    requires = ("zh_definitely_not_installed_pkg",)
    install_hint = "pip install zh-definitely-not-installed"


class NotAPlugin:
    name = "stray"
'''

ENTRY_POINTS = """
[zhllama.templates]
shout = zh_fake_plugin:Shout
[zhllama.quantizers]
copy = zh_fake_plugin:CopyQuantizer
needs-missing = zh_fake_plugin:NeedsMissing
stray = zh_fake_plugin:NotAPlugin
[zhllama.engines]
delegate = zh_fake_plugin:Delegate
marked = zh_fake_plugin:Marked
flaky = zh_fake_plugin:Flaky
broken = zh_fake_plugin:NoSuchEngine
[zhllama.benchmarks]
count-chars = zh_fake_plugin:CountChars
"""


@pytest.fixture
def fake_plugin_dist(tmp_path, monkeypatch):
    """Install nothing: write a module and a *.dist-info with entry_points.txt into a sys.path dir."""
    (tmp_path / "zh_fake_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = tmp_path / "zh_fake_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zh-fake-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("zh_fake_plugin", None)


@pytest.fixture
def run_with_plugin(fake_plugin_dist):
    """`zhllama ARGS...` in a fresh process that has the fake distribution on its path."""
    import os
    import subprocess

    def _run(*args):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_plugin_dist), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            [sys.executable, "-m", "zhllama", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
        )
        return done.returncode, done.stdout, done.stderr

    return _run


def test_template_plugin_renders_through_the_template_system(fake_plugin_dist, base_tokenizer):
    from zhllama.core.templates import Message, encode, get_template
    from zhllama.core.tokenizer import ZhTokenizer

    tok = ZhTokenizer(base_tokenizer)
    template = get_template("shout")
    ids, labels = encode(tok, template.segments([Message("user", "hi"), Message("assistant", "ok")]))
    assert ids == [tok.bos_id, *tok.encode("HI! "), *tok.encode("ok")]
    assert labels[: 1 + len(tok.encode("HI! "))] == [-100] * (1 + len(tok.encode("HI! ")))


def test_quantizer_plugin_gets_exactly_its_own_flags(run_with_plugin, tiny_zh_model, tmp_path):
    out = tmp_path / "copied"
    code, stdout, err = run_with_plugin(
        "--json", "quantize", "copy", "--model", tiny_zh_model, "--output", out, "--suffix", ".x", "--repeat", "2"
    )
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.x")) == ["model.safetensors.0.x", "model.safetensors.1.x"]
    assert json.loads(stdout)["settings"] == {"suffix": ".x", "repeat": 2}
    code, _, err = run_with_plugin(
        "quantize", "copy", "--model", tiny_zh_model, "--output", tmp_path / "o2", "--type", "Q4_0"
    )
    assert code == 2 and "No such option: --type" in err  # another method's flag is an error
    code, _, err = run_with_plugin(
        "quantize", "copy", "--model", tiny_zh_model, "--output", tmp_path / "o3", "--repeat", "0"
    )
    assert code == 2 and "--repeat: must be at least 1" in err and not (tmp_path / "o3").exists()


def test_benchmark_plugin_brings_its_own_command(run_with_plugin):
    for argv in (("eval", "count-chars"), ("count-chars",)):
        code, stdout, err = run_with_plugin("--json", *argv, "--text", "你好吗")
        assert code == 0, err
        assert json.loads(stdout) == {"chars": 3}


def test_engine_plugin_is_chosen_by_path_and_loads(fake_plugin_dist, tiny_zh_model, tmp_path):
    from zhllama.core.engine import choose_engine, open_model
    from zhllama.core.loading import ModelOptions

    pointer = tmp_path / "m.delegate"
    pointer.write_text(str(tiny_zh_model))
    assert choose_engine(pointer) == "delegate"
    via_plugin = open_model(ModelOptions(model=str(pointer)))  # no --engine: chosen by what it declares
    direct = open_model(ModelOptions(model=str(tiny_zh_model)))
    ids = [[1, 5, 9, 30]]
    assert (via_plugin.next_token_logits(ids) - direct.next_token_logits(ids)).abs().max().item() == 0.0
    named = open_model(ModelOptions(model=str(pointer), engine="delegate"))
    assert (named.next_token_logits(ids) - direct.next_token_logits(ids)).abs().max().item() == 0.0


def test_engines_are_asked_by_declared_priority_and_builtins_keep_their_models(
    fake_plugin_dist, tiny_zh_model, tmp_path
):
    import shutil

    from zhllama.core.engine import choose_engine, engines_by_priority

    # every registered engine, built-ins included; 'broken' (its class does not exist) is skipped
    order = [name for name, _ in engines_by_priority()]
    assert order == ["flaky", "marked", "llamacpp", "transformers", "delegate", "vllm"]
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert choose_engine(gguf) == "llamacpp"  # flaky's failing check is passed over
    assert choose_engine(tiny_zh_model) == "transformers"  # before vllm (priority 0), which opens it too
    marked = shutil.copytree(tiny_zh_model, tmp_path / "marked")
    (marked / "fake.marker").write_text("")
    assert choose_engine(marked) == "marked"  # priority 50 is asked before transformers' 10
    assert choose_engine(marked, "transformers") == "transformers"  # --engine wins
    with pytest.raises(UserError, match="no engine accepts this model"):
        choose_engine(tmp_path / "m.unknown")


def test_only_engines_declaring_resolves_sources_get_resolved_models(fake_plugin_dist, tmp_path):
    from zhllama.core.engine import open_model
    from zhllama.core.loading import ModelOptions
    from zhllama.plugins.engines.transformers_engine import TransformersEngine

    assert TransformersEngine.resolves_sources and not registry.load("engines", "delegate").resolves_sources
    # a hub id goes through resolve_model (offline here: the cache is asked and has nothing)
    with pytest.raises(UserError, match="zh-org/no-such-model: no such folder, and not in the Hugging Face cache"):
        open_model(ModelOptions(model="zh-org/no-such-model"))
    # an engine with sources of its own gets the path as given, and it must exist
    with pytest.raises(UserError, match="missing.delegate: model not found"):
        open_model(ModelOptions(model=str(tmp_path / "missing.delegate"), engine="delegate"))


def test_plugins_command_lists_fake_plugins_with_install_hint(run_with_plugin):
    code, out, err = run_with_plugin("--json", "plugins")
    assert code == 0, err
    by_name = {p["name"]: p for p in json.loads(out)["plugins"]}
    for name in ("shout", "copy", "delegate", "count-chars"):
        assert by_name[name]["available"] is True and by_name[name]["distribution"] == "zh-fake-plugin"
    missing = by_name["needs-missing"]
    assert missing["available"] is False
    assert missing["missing"] == ["zh_definitely_not_installed_pkg"]
    assert missing["install_hint"] == "pip install zh-definitely-not-installed"


def test_missing_dependency_error_says_how_to_install(fake_plugin_dist):
    with pytest.raises(MissingDependencyError, match="pip install zh-definitely-not-installed"):
        registry.load("quantizers", "needs-missing")


def test_a_class_outside_the_plugin_api_is_refused(fake_plugin_dist):
    with pytest.raises(UserError, match="'stray' .* is not a subclass of QuantizerPlugin"):
        registry.load("quantizers", "stray")


def test_unknown_plugin_suggests_closest(fake_plugin_dist):
    with pytest.raises(UserError, match="did you mean 'copy'"):
        registry.load("quantizers", "coppy")


def test_builtin_plugins_come_through_entry_points_and_follow_the_api():
    from zhllama.core.plugin_api import base_class

    assert {"alpaca", "llama2-zh", "chatml", "none"} <= set(registry.names("templates"))
    for kind in ("templates", "quantizers", "engines", "benchmarks"):
        for info in registry.describe(kind):
            assert info.distribution == "zhllama"
            assert issubclass(registry.load(kind, info.name, check_requirements=False), base_class(kind))
